; 1x1 convolution 8 -> 12 channels with bias and ReLU on the tiny preset (N=4).
; Input 5x5 pixels x 2 blocks, output 5x5 pixels x 3 blocks.
; Memory map: x      0x0000  50 BFP vectors
;             W      0x1000  6 tiles, order (output block, input block)
;             b      0x2000  3 binary32 vectors
;             y      0x3000  75 BFP vectors (output)
seti r1, 0x0000
ld   vrf, r0, r1, 1, 50
seti r2, 0x1000
ld   mrf, r0, r2, 1, 6
seti r3, 0x2000
seti r4, 500
ld   fvrf, r4, r3, 1, 3
cfg  in_h, r0, 5
cfg  in_w, r0, 5
cfg  in_cb, r0, 2
cfg  out_w, r0, 5
cfg  npix, r0, 25
cfg  cob, r0, 3
mvc  r0, r0, r0, 0              ; fvrf[0..75)
vop  add, r0, r0, r4, 75, 3
vact relu, r0, r0, 75
seti r5, 200
qnt  r5, r0, 75
seti r6, 0x3000
st   vrf, r5, r6, 1, 75
halt
