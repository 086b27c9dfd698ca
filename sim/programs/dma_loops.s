; Strided DMA under nested hardware loops on the tiny preset (N=4: a BFP vector is 5 bytes, a
; weight tile 20, a binary32 vector 16). No arithmetic: every byte it writes is a byte it read.
; Memory map: image   0x0000  6 rows of 5 BFP vectors, rows 40 bytes apart
;             columns 0x0400  the image transposed: column c (6 vectors) at 0x0400 + 30*c
;             tiles   0x0600  3 weight tiles, packed; written back at 0x0700, 23 bytes apart
;             fvecs   0x0800  4 binary32 vectors; written back at 0x0900 twice, reversed in pairs
;             copy    0x0a00  the image rows again, packed, written by a nested loop
seti r1, 0x0000                ; source row address
seti r2, 0                     ; VRF entry of the row
loop r0, 6, 3
ld   vrf, r2, r1, 1, 5
addi r1, r1, 40
addi r2, r2, 5
cfg  chip_stride, r0, 5        ; a column: entries c, c+5, ..., packed in memory
seti r3, 0x0400
seti r4, 0
loop r0, 5, 3
st   vrf, r4, r3, 6, 1
addi r3, r3, 30
addi r4, r4, 1
cfg  chip_stride, r0, 0
seti r5, 0x0600
ld   mrf, r0, r5, 1, 3
seti r6, 0x0700
cfg  mem_stride, r0, 23        ; unaligned rows, 3 bytes apart
st   mrf, r0, r6, 3, 1
cfg  mem_stride, r0, 0
seti r7, 0x0800
ld   fvrf, r0, r7, 2, 2
seti r8, 0x0900
seti r9, 2
seti r10, 1
loop r10, 1, 4                 ; twice: pairs (2, 3) then (0, 1)
st   fvrf, r9, r8, 1, 2
addi r8, r8, 32
addi r9, r9, -2
nop
seti r11, 0x0a00
seti r12, 0
loop r0, 3, 6                  ; rows in pairs: 3 iterations of 2 rows
loop r0, 2, 3
st   vrf, r12, r11, 1, 5
addi r11, r11, 25
addi r12, r12, 5
nop
nop
halt
