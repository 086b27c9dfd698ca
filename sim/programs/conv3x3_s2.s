; 3x3 convolution, stride 2, padding 1, with bias, on the tiny preset (N=4).
; Input 7x6 pixels x 8 channels (2 blocks), output 4x3 pixels x 8 channels (2 blocks).
; The output is computed one row at a time by a hardware loop.
; Memory map: x      0x0000  84 BFP vectors, pixel-major
;             W      0x1000  36 tiles, order (output block, tap, input block)
;             b      0x2000  2 binary32 vectors
;             y      0x3000  24 BFP vectors (output)
seti r1, 0x0000
ld   vrf, r0, r1, 1, 84         ; vrf[0..84) <- x
seti r2, 0x1000
ld   mrf, r0, r2, 1, 36         ; mrf[0..36) <- W
seti r3, 0x2000
seti r4, 200
ld   fvrf, r4, r3, 1, 2         ; fvrf[200..202) <- b
cfg  in_h, r0, 7
cfg  in_w, r0, 6
cfg  in_cb, r0, 2
cfg  kh, r0, 3
cfg  kw, r0, 3
cfg  stride_h, r0, 2
cfg  stride_w, r0, 2
cfg  pad_t, r0, 1
cfg  pad_l, r0, 1
cfg  out_w, r0, 3
cfg  npix, r0, 3                ; one output row per MVC
cfg  cob, r0, 2
seti r7, 0                      ; first pixel of the row
seti r8, 0                      ; fvrf destination of the row
loop r0, 4, 4                   ; 4 output rows
cfg  pix0, r7, 0
mvc  r8, r0, r0, 0
addi r7, r7, 3
addi r8, r8, 6
vop  add, r0, r0, r4, 24, 2     ; + b, broadcast per output block
seti r5, 100
qnt  r5, r0, 24
seti r6, 0x3000
st   vrf, r5, r6, 1, 24
halt
