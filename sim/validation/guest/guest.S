# migsim's validation guest: a 512-byte x86 boot sector that dirties memory at a steady rate.
#
# Why it exists: to compare the simulator with a real QEMU we need a guest whose dirty pattern is
# known exactly and does not depend on how fast TCG emulates it. This guest
#   1. switches to 32-bit protected mode with flat segments;
#   2. turns on paging with an identity map of 4 GiB in 4 MiB pages (CR4.PSE), only so that INVLPG
#      has a translation to drop (see "TCG" below);
#   3. writes one non-zero dword into every page from 1 MiB up to `fill end` (so the guest has no
#      zero pages outside what the BIOS left below 1 MiB: zero-page placement is then known), and
#      writes the working set once, unpaced, so every page of it holds the touch pattern;
#   4. then, on every tick of the PIT (channel 0, rate generator), wakes from HLT and makes
#      `touches per tick` touches. A touch writes `bytes per touch` bytes, all equal to the current
#      sweep value, at base + k * stride (k = 0 .. count-1, then wraps; the value changes at each
#      wrap and skips 0, so a rewritten page always differs from what was sent before and never
#      becomes a zero page again).
# The touch rate is ticks/s x touches/tick, set by the PIT's divisor, not by the emulation speed.
#
# TCG (QEMU 7.2): a guest store to a page whose translation stays in TCG's soft TLB across a
# dirty-bitmap sync can be missed by dirty tracking (the TLB entry is not re-armed as "not dirty").
# INVLPG before each touch drops the entry, so the store takes the slow path that marks the page
# dirty. With 4 MiB pages QEMU flushes the whole soft TLB on INVLPG (it cannot drop part of a large
# page), which costs a few microseconds per touch: cheap at the rates used here.
#
# The timer interrupt: the BIOS leaves the master PIC at vectors 8..15, so IRQ0 is vector 8. The
# IDT holds one real gate (vector 8); its base is placed 64 bytes before that gate, so vectors 0..7
# point at whatever precedes it. Any exception therefore triple-faults, and QEMU (-no-reboot)
# exits: the harness sees a dead guest instead of silently wrong data.
#
# Observable state (little-endian dwords in guest RAM, read by the harness with `xp`):
#   0x500 ticks, 0x504 touches, 0x508 completed sweeps (>= 1 once the initial fill is done).
# Parameters: a block at offset PARAMS (0x1a0) of the sector, patched by sim/validation/guest.py:
#   "MGSG" magic, then dwords base, count, stride, size, touches per tick, PIT divisor, fill end.
#
# Build (GNU binutils):  as --32 -o guest.o guest.S
#                        ld -m elf_i386 -Ttext=0x7c00 -e _start --oformat binary -o guest.bin guest.o

        .set    TICKS,   0x500
        .set    TOUCHES, 0x504
        .set    SWEEPS,  0x508
        .set    PD,      0x1000          # page directory (4 KiB, in free conventional memory)

        .code16
        .text
        .globl  _start
_start:
        cli
        cld
        xorw    %ax, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    $0x7c00, %sp
        ljmp    $0, $real                # normalise CS:IP (some BIOSes enter at 07c0:0000)
real:
        inb     $0x92, %al               # fast A20
        orb     $2, %al
        andb    $0xfe, %al
        outb    %al, $0x92
        lgdtl   gdt_desc
        movl    %cr0, %eax
        orb     $1, %al
        movl    %eax, %cr0
        ljmp    $0x08, $pm32

        .code32
pm32:
        movw    $0x10, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    %ax, %fs
        movw    %ax, %gs
        movl    $0x7c00, %esp
        xorl    %eax, %eax
        movl    %eax, TICKS
        movl    %eax, TOUCHES
        movl    %eax, SWEEPS

        movl    $PD, %edi                # identity map: 1024 PDEs of 4 MiB (P | RW | PS)
        movl    $0x83, %eax
        movl    $1024, %ecx
1:      stosl
        addl    $0x400000, %eax
        loop    1b
        movl    %cr4, %eax
        orl     $0x10, %eax              # CR4.PSE
        movl    %eax, %cr4
        movl    $PD, %eax
        movl    %eax, %cr3
        movl    %cr0, %eax
        orl     $0x80000000, %eax        # CR0.PG
        movl    %eax, %cr0
        jmp     2f
2:
        movb    $0xfe, %al               # PIC: only IRQ0 unmasked
        outb    %al, $0x21
        movb    $0xff, %al
        outb    %al, $0xa1
        lidt    idt_desc
        movb    $0x34, %al               # PIT channel 0, lobyte/hibyte, mode 2
        outb    %al, $0x43
        movl    P_DIV, %eax
        outb    %al, $0x40
        movb    %ah, %al
        outb    %al, $0x40

        movl    $0x100000, %edi          # every page from 1 MiB to P_FILL gets a non-zero dword,
        movl    $0x5a5a5a5a, %eax        # so zero pages are only those the BIOS left below 1 MiB
5:      cmpl    P_FILL, %edi
        jae     6f
        movl    %eax, (%edi)
        addl    $4096, %edi
        jmp     5b
6:
        movl    P_BASE, %esi             # the initial fill: one sweep, unpaced
        movl    P_COUNT, %edx
        movb    $1, %bl
        movl    %edx, %ebp
        call    touch
        sti
main:
        hlt
        movl    P_TPT, %ebp
        call    touch
        jmp     main

# %ebp touches from %esi; %edx touches left in this sweep; %bl the value written.
touch:
        invlpg  (%esi)
        movl    %esi, %edi
        movl    P_SIZE, %ecx
        movb    %bl, %al
        rep stosb
        incl    TOUCHES
        addl    P_STRIDE, %esi
        decl    %edx
        jnz     3f
        movl    P_BASE, %esi
        movl    P_COUNT, %edx
        incb    %bl
        jnz     4f
        incb    %bl
4:      incl    SWEEPS
3:      decl    %ebp
        jnz     touch
        ret

tick:
        incl    TICKS
        pushl   %eax
        movb    $0x20, %al               # EOI
        outb    %al, $0x20
        popl    %eax
        iret

        .p2align 3
gdt:
        .quad   0
        .quad   0x00cf9a000000ffff       # 0x08: code, flat 4 GiB
        .quad   0x00cf92000000ffff       # 0x10: data, flat 4 GiB
gdt_desc:
        .word   gdt_desc - gdt - 1
        .long   gdt
idt_gate:                                # vector 8 (IRQ0): interrupt gate to `tick`
        .word   tick
        .word   0x08
        .byte   0, 0x8e
        .word   0
idt_desc:
        .word   9 * 8 - 1
        .long   idt_gate - 8 * 8

        .org    0x1a0
params:
        .ascii  "MGSG"
P_BASE:   .long 0x01000000               # first byte touched (16 MiB)
P_COUNT:  .long 1024                     # touches per sweep
P_STRIDE: .long 4096                     # bytes between touches
P_SIZE:   .long 64                       # bytes written per touch
P_TPT:    .long 1                        # touches per tick
P_DIV:    .long 1193                     # PIT divisor (1193182 Hz / divisor = ticks per second)
P_FILL:   .long 0                        # end of the non-zero fill (bytes; 0 = no fill)

        .org    0x1fe
        .word   0xaa55
