; Dense layer with bias on the tiny preset (N=4): y[8] = W[8x12] . x[12] + b, re-quantised.
; Memory map: x      0x0000  3 BFP vectors
;             W      0x0100  6 tiles, order (output block, input block)
;             b      0x0400  2 binary32 vectors
;             y      0x0800  2 BFP vectors (output)
seti r1, 0x0000
ld   vrf, r0, r1, 1, 3          ; vrf[0..3)   <- x
seti r2, 0x0100
ld   mrf, r0, r2, 1, 6          ; mrf[0..6)   <- W
seti r3, 0x0400
seti r4, 16
ld   fvrf, r4, r3, 1, 2         ; fvrf[16..18) <- b
cfg  in_cb, r0, 3
cfg  cob, r0, 2
mvc  r0, r0, r0, 0              ; fvrf[0..2) <- W . x
vop  add, r0, r0, r4, 2, 2      ; + b
seti r5, 8
qnt  r5, r0, 2                  ; vrf[8..10) <- quantise
seti r6, 0x0800
st   vrf, r5, r6, 1, 2
halt
