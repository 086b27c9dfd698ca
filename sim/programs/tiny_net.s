; A small CNN on the tiny preset (N=4), hand-assembled:
;   conv 3x3 (4 -> 8 channels, padding 1) + bias + ReLU    8x8 -> 8x8
;   max pool 2x2, stride 2                                 8x8 -> 4x4
;   global average pool                                    4x4 -> 1x1
;   dense 8 -> 4 + bias                                    class scores (binary32)
; Memory map: x       0x0000  64 BFP vectors (8x8 pixels, 1 block: RGB + a zero channel)
;             conv W  0x1000  18 tiles (output block, tap)
;             conv b  0x2000  2 binary32 vectors
;             fc W    0x1400  2 tiles (input block)
;             fc b    0x2020  1 binary32 vector (right after conv b)
;             scores  0x3000  1 binary32 vector (output)
seti r1, 0x0000
ld   vrf, r0, r1, 1, 64          ; vrf[0..64) <- x
seti r1, 0x1000
ld   mrf, r0, r1, 1, 18          ; mrf[0..18) <- conv W
seti r1, 0x1400
seti r2, 18
ld   mrf, r2, r1, 1, 2           ; mrf[18..20) <- fc W
seti r1, 0x2000
seti r3, 1000
ld   fvrf, r3, r1, 1, 3          ; fvrf[1000..1003) <- conv b, fc b
; conv 3x3 + bias + ReLU -> vrf[100..228)
cfg  in_h, r0, 8
cfg  in_w, r0, 8
cfg  in_cb, r0, 1
cfg  kh, r0, 3
cfg  kw, r0, 3
cfg  pad_t, r0, 1
cfg  pad_l, r0, 1
cfg  out_w, r0, 8
cfg  npix, r0, 64
cfg  cob, r0, 2
mvc  r0, r0, r0, 0               ; fvrf[0..128)
vop  add, r0, r0, r3, 128, 2
vact relu, r0, r0, 128
seti r4, 100
qnt  r4, r0, 128
; max pool 2x2 stride 2 -> vrf[300..332)
cfg  in_cb, r0, 2
cfg  kh, r0, 2
cfg  kw, r0, 2
cfg  stride_h, r0, 2
cfg  stride_w, r0, 2
cfg  pad_t, r0, 0
cfg  pad_l, r0, 0
cfg  out_w, r0, 4
cfg  npix, r0, 16
seti r5, 200
pool max, r5, r4                 ; fvrf[200..232)
seti r6, 300
qnt  r6, r5, 32
; global average pool -> vrf[500..502)
cfg  in_h, r0, 4
cfg  in_w, r0, 4
cfg  kh, r0, 4
cfg  kw, r0, 4
cfg  stride_h, r0, 1
cfg  stride_w, r0, 1
cfg  out_w, r0, 1
cfg  npix, r0, 1
seti r7, 400
pool avg, r7, r6                 ; fvrf[400..402)
seti r8, 500
qnt  r8, r7, 2
; dense 8 -> 4 + bias -> scores
cfg  in_h, r0, 1
cfg  in_w, r0, 1
cfg  kh, r0, 1
cfg  kw, r0, 1
cfg  cob, r0, 1
seti r9, 600
mvc  r9, r8, r2, 0               ; fvrf[600]
seti r10, 1002
vop  add, r9, r9, r10, 1, 0
seti r11, 0x3000
st   fvrf, r9, r11, 1, 1
halt
