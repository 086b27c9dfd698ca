; Residual block tail on the tiny preset (N=4): y = relu(conv1x1(x) + b + s), re-quantised.
; x and s are 4x4 pixels x 8 channels (2 blocks); the 1x1 conv keeps 8 channels.
; Memory map: x      0x0000  32 BFP vectors
;             s      0x0400  32 BFP vectors (shortcut)
;             W      0x0800  4 tiles
;             b      0x0C00  2 binary32 vectors
;             y      0x1000  32 BFP vectors (output)
seti r1, 0x0000
ld   vrf, r0, r1, 1, 32         ; vrf[0..32)  <- x
seti r1, 0x0400
seti r2, 64
ld   vrf, r2, r1, 1, 32         ; vrf[64..96) <- s
seti r1, 0x0800
ld   mrf, r0, r1, 1, 4
seti r1, 0x0C00
seti r3, 300
ld   fvrf, r3, r1, 1, 2         ; fvrf[300..302) <- b
cfg  in_h, r0, 4
cfg  in_w, r0, 4
cfg  in_cb, r0, 2
cfg  out_w, r0, 4
cfg  npix, r0, 16
cfg  cob, r0, 2
mvc  r0, r0, r0, 0              ; fvrf[0..32) <- conv
vop  add, r0, r0, r3, 32, 2     ; + b
seti r4, 100
deq  r4, r2, 32                 ; fvrf[100..132) <- s
vop  add, r0, r0, r4, 32, 0     ; + s
vact relu, r0, r0, 32
seti r5, 200
qnt  r5, r0, 32
seti r6, 0x1000
st   vrf, r5, r6, 1, 32
halt
