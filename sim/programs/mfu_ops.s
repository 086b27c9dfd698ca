; The multi-function unit's deq, vop (add, sub, max, mul; periodic second operand) and vact (copy,
; relu, clip, leaky relu) on the tiny preset (N=4), results stored as binary32 vectors.
; Memory map: q      0x0000  8 BFP vectors
;             a      0x0100  12 binary32 vectors
;             b      0x0300  4 binary32 vectors (a bias: repeats every 4 vectors)
;             out    0x0400  fvrf[16..144) as binary32 vectors (out)
seti r1, 0x0000
ld   vrf, r0, r1, 1, 8          ; vrf[0..8)     <- q
seti r2, 0x0100
seti r3, 16
ld   fvrf, r3, r2, 1, 12        ; fvrf[16..28)  <- a
seti r4, 0x0300
seti r5, 32
ld   fvrf, r5, r4, 1, 4         ; fvrf[32..36)  <- b
seti r6, 40
deq  r6, r0, 8                  ; fvrf[40..48)  <- deq q
seti r7, 48
vop  add, r7, r3, r5, 12, 4     ; fvrf[48..60)  <- a + b
seti r8, 60
vop  sub, r8, r3, r6, 8, 0      ; fvrf[60..68)  <- a - deq q
seti r9, 68
vop  max, r9, r3, r5, 12, 4     ; fvrf[68..80)  <- max(a, b)
vop  add, r3, r3, r3, 12, 0     ; a <- a + a, in place
seti r10, 80
vact relu, r10, r7, 12          ; fvrf[80..92)  <- relu(a + b)
seti r11, 92
cfg  clip_lo, r0, -0.5
cfg  clip_hi, r0, 0.75
vact clip, r11, r8, 8           ; fvrf[92..100) <- clip(a - deq q)
seti r12, 100
cfg  clip_lo, r0, -0.0
vact clip, r12, r9, 12          ; fvrf[100..112) <- clip(max(a, b), -0, 0.75)
seti r13, 112
vact copy, r13, r6, 8           ; fvrf[112..120) <- deq q
seti r15, 120
vop  mul, r15, r3, r5, 12, 4    ; fvrf[120..132) <- (a + a) * b
cfg  alpha, r0, 0.125
seti r13, 132
vact lrelu, r13, r7, 12         ; fvrf[132..144) <- leaky relu(a + b)
seti r14, 0x0400
st   fvrf, r3, r14, 1, 128
halt
