; Fused vop on the tiny preset (N=4): the second operand dequantised from the VRF, the operation,
; an activation and quantisation into the VRF in one pass of the multi-function unit, against the
; same operands as mfu_ops.s.
; Memory map: q      0x0000  8 BFP vectors
;             a      0x0100  12 binary32 vectors
;             b      0x0300  4 binary32 vectors (repeats every 4 vectors)
;             out    0x0400  fvrf[16..92) as binary32 vectors
;                    0x0900  vrf[0..64) as BFP vectors
seti r1, 0x0100
seti r3, 16
ld   fvrf, r3, r1, 1, 12                  ; fvrf[16..28) <- a
seti r4, 0x0300
seti r5, 32
ld   fvrf, r5, r4, 1, 4                   ; fvrf[32..36) <- b
seti r7, 48
vop  add, r7, r3, r5, 12, 4, relu         ; fvrf[48..60) <- relu(a + b)
seti r8, 60
cfg  clip_lo, r0, -0.5
cfg  clip_hi, r0, 0.75
vop  sub, r8, r3, r5, 12, 4, clip         ; fvrf[60..72) <- clip(a - b)
seti r9, 72
cfg  alpha, r0, 0.125
vop  mul, r9, r3, r5, 12, 4, lrelu        ; fvrf[72..84) <- leaky relu(a * b)
vop  add, r0, r3, r5, 12, 4, relu, vrf    ; vrf[0..12)   <- qnt(relu(a + b))
seti r10, 12
vop  max, r10, r3, r5, 12, 4, copy, vrf   ; vrf[12..24)  <- qnt(max(a, b))
seti r11, 24
vop  mul, r11, r3, r3, 12, 0, clip, vrf   ; vrf[24..36)  <- qnt(clip(a * a))
seti r12, 36
vop  sub, r12, r3, r5, 12, 4, lrelu, vrf  ; vrf[36..48)  <- qnt(leaky relu(a - b))
seti r13, 48
ld   vrf, r13, r0, 1, 8                   ; vrf[48..56)  <- q
seti r1, 56
vop  add, r1, r3, r13, 8, 0, relu, vrf, vrf  ; vrf[56..64) <- qnt(relu(a + deq q))
seti r1, 84
vop  sub, r1, r3, r13, 8, 4, copy, fvrf, vrf ; fvrf[84..92) <- a - deq q[0..4) (periodic)
vop  max, r13, r3, r13, 8, 0, copy, vrf, vrf ; vrf[48..56) <- qnt(max(a, deq q)), in place
vop  add, r3, r3, r5, 12, 4, relu         ; a <- relu(a + b), in place
seti r14, 0x0400
st   fvrf, r3, r14, 1, 76
seti r15, 0x0900
st   vrf, r0, r15, 1, 64
halt
