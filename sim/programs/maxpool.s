; 3x3 max pool, stride 2, padding 1 on the tiny preset (N=4): 7x7x8 -> 4x4x8.
; Memory map: x      0x0000  98 BFP vectors
;             y      0x1000  32 BFP vectors (output)
seti r1, 0x0000
ld   vrf, r0, r1, 1, 98
cfg  in_h, r0, 7
cfg  in_w, r0, 7
cfg  in_cb, r0, 2
cfg  kh, r0, 3
cfg  kw, r0, 3
cfg  stride_h, r0, 2
cfg  stride_w, r0, 2
cfg  pad_t, r0, 1
cfg  pad_l, r0, 1
cfg  pad_b, r0, 1
cfg  pad_r, r0, 1
cfg  out_w, r0, 4
cfg  npix, r0, 16
pool max, r0, r0                ; fvrf[0..32)
seti r5, 200
qnt  r5, r0, 32
seti r6, 0x1000
st   vrf, r5, r6, 1, 32
halt
