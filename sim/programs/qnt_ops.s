; qnt on the tiny preset (N=4): binary32 vectors quantised to BFP, also after clips that push
; infinities and subnormals into the FVRF (bounds given as raw binary32 bits).
; Memory map: v      0x0000  16 binary32 vectors
;             out    0x0400  vrf[0..16): qnt of v; vrf[16..20): qnt of clip(v[0..4), +inf, +inf);
;                            vrf[20..24): qnt of clip(v[4..8), 5 * 2**-149, 7 * 2**-149)   (out)
seti r1, 0x0000
seti r2, 64
ld   fvrf, r2, r1, 1, 16        ; fvrf[64..80) <- v
qnt  r0, r2, 16                 ; vrf[0..16)
seti r3, 0x7f800000
cfg  clip_lo, r3, 0
cfg  clip_hi, r3, 0
seti r4, 80
vact clip, r4, r2, 4            ; fvrf[80..84) <- +inf
seti r5, 16
qnt  r5, r4, 4                  ; vrf[16..20)
cfg  clip_lo, r0, 5
cfg  clip_hi, r0, 7
seti r6, 68
vact clip, r4, r6, 4            ; fvrf[80..84) <- subnormals
seti r7, 20
qnt  r7, r4, 4                  ; vrf[20..24)
seti r8, 0x0400
st   vrf, r0, r8, 1, 24
halt
