/* tests/guest/entry.S — PVH entry, the only ring-0 code besides exceptions.
 *
 * Contract (Xen PVH boot ABI): entered at pvh_entry32 in 32-bit protected
 * mode, paging off, flat 4 GiB segments, interrupts off, %ebx = physical
 * address of struct hvm_start_info.
 *
 * Ring 0 is emulated instruction by instruction under nested PVM, so this
 * code only does what ring 3 cannot: CR3/CR4/EFER/CR0, lgdt/lidt/ltr, the
 * kvmclock MSR, then iretq to 64-bit ring 3 with IOPL 3 and IF 0.  The page
 * tables (pagetables.S), GDT, TSS descriptor and IDT gates are all built at
 * link time.  An exception (in either ring) lands in isr_common on the TSS
 * rsp0 stack and is reported by exception_report(); it never returns.
 */

#define KSTACK_SIZE 16384
#define USTACK_SIZE 65536

#define SEL_KCODE   0x08
#define SEL_KDATA   0x10
#define SEL_UDATA   0x1b        /* 0x18 | RPL 3 */
#define SEL_UCODE   0x23        /* 0x20 | RPL 3 */
#define SEL_TSS     0x28

#define MSR_EFER               0xc0000080
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01
#define KVM_FEATURE_CLOCKSOURCE2 (1 << 3)

/* ---------------------------------------------------------------- PVH note */
	.section .note.Xen, "a", @note
	.balign 4
	.long 4                 /* namesz: "Xen\0" */
	.long 4                 /* descsz: 32-bit entry address */
	.long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.balign 4
	.long pvh_entry32
	/* An empty note (all zero) follows, so a loader that reads the entry
	 * as 8 bytes (QEMU does) sees a zero upper half. */
	.long 0, 0, 0

/* ------------------------------------------------------ 32-bit entry point */
	.section .text.entry32, "ax"
	.code32
	.globl pvh_entry32
pvh_entry32:
	movl %ebx, boot_start_info
	movl $pt_pml4, %eax
	movl %eax, %cr3
	movl $0x20, %eax                /* CR4.PAE only */
	movl %eax, %cr4
	movl $MSR_EFER, %ecx
	movl $0x100, %eax               /* EFER.LME */
	xorl %edx, %edx
	wrmsr
	lgdt gdt_ptr
	movl $0x80000031, %eax          /* CR0: PG | NE | ET | PE */
	movl %eax, %cr0
	ljmp $SEL_KCODE, $long_entry

/* ------------------------------------------------------ 64-bit ring 0 */
	.code64
long_entry:
	movl $SEL_KDATA, %eax
	mov %eax, %ss
	movl $kstack_top, %esp
	lidt idt_ptr
	movl $SEL_TSS, %eax
	ltr %ax

	/* kvmclock if the hypervisor signature is KVM's and it has clocksource2 */
	movl $0x40000000, %eax
	cpuid
	cmpl $0x4b4d564b, %ebx          /* "KVMK" */
	jne 1f
	cmpl $0x564b4d56, %ecx          /* "VMKV" */
	jne 1f
	cmpl $0x0000004d, %edx          /* "M\0\0\0" */
	jne 1f
	movl $0x40000001, %eax
	cpuid
	testl $KVM_FEATURE_CLOCKSOURCE2, %eax
	jz 1f
	movl $MSR_KVM_SYSTEM_TIME_NEW, %ecx
	movl $boot_pvclock + 1, %eax    /* bit 0: enable */
	xorl %edx, %edx
	wrmsr
	movl $1, boot_kvmclock
1:
	/* Drop to ring 3 with IOPL 3 and IF 0.  Nested PVM does not give ring 3
	 * the IOPL (RFLAGS.IOPL reads 0 there); it does honour the TSS I/O
	 * permission bitmap, which allows every port. */
	pushq $SEL_UDATA
	pushq $ustack_top
	pushq $0x3002
	pushq $SEL_UCODE
	pushq $user_entry
	iretq

/* ------------------------------------------------------ ring 3 */
	.text
user_entry:
	call user_main
	ud2

/* ------------------------------------------------------ exceptions */
/* One 16-byte stub per vector 0..31: push a dummy error code where the CPU
 * does not push one, push the vector, go to isr_common. */
.macro ISR vec, haserr
	.balign 16
	.if \haserr == 0
	pushq $0
	.endif
	pushq $\vec
	jmp isr_common
.endm

	.text
	.balign 512
	.globl isr_stubs
isr_stubs:
	ISR 0,0;  ISR 1,0;  ISR 2,0;  ISR 3,0;  ISR 4,0;  ISR 5,0;  ISR 6,0;  ISR 7,0
	ISR 8,1;  ISR 9,0;  ISR 10,1; ISR 11,1; ISR 12,1; ISR 13,1; ISR 14,1; ISR 15,0
	ISR 16,0; ISR 17,1; ISR 18,0; ISR 19,0; ISR 20,0; ISR 21,1; ISR 22,0; ISR 23,0
	ISR 24,0; ISR 25,0; ISR 26,0; ISR 27,0; ISR 28,0; ISR 29,1; ISR 30,1; ISR 31,0

/* Stack: vector, error, rip, cs, rflags, rsp, ss. */
isr_common:
	movq 0(%rsp), %rdi              /* vector */
	movq 8(%rsp), %rsi              /* error code */
	movq 16(%rsp), %rdx             /* rip */
	movq 24(%rsp), %rcx             /* cs */
	movq %cr2, %r8
	movq 40(%rsp), %r9              /* rsp */
	movq 32(%rsp), %rax             /* rflags: 7th argument, on the stack */
	andq $-16, %rsp
	subq $8, %rsp
	pushq %rax
	call exception_report
2:	cli
	hlt
	jmp 2b

/* ------------------------------------------------------ descriptor tables */
	.data
	.balign 16
gdt:
	.quad 0
	.quad 0x00af9a000000ffff        /* 0x08 ring-0 code, 64-bit */
	.quad 0x00cf92000000ffff        /* 0x10 ring-0 data */
	.quad 0x00cff2000000ffff        /* 0x18 ring-3 data */
	.quad 0x00affa000000ffff        /* 0x20 ring-3 code, 64-bit */
	/* 0x28 64-bit TSS (available), with an 8 KiB I/O bitmap */
	.word boot_tss_end - boot_tss - 1
	.word __tss_b0
	.byte __tss_b16
	.byte 0x89
	.byte 0x00
	.byte __tss_b24
	.long 0
	.long 0
gdt_end:

	.balign 8
gdt_ptr:
	.word gdt_end - gdt - 1
	.long gdt
	.long 0

	.balign 8
idt_ptr:
	.word idt_end - idt - 1
	.quad idt

	.balign 16
	.globl boot_tss
boot_tss:
	.long 0
	.quad kstack_top                /* rsp0 */
	.quad 0, 0                      /* rsp1, rsp2 */
	.quad 0
	.quad 0, 0, 0, 0, 0, 0, 0       /* ist1..7 */
	.quad 0
	.word 0
	.word 104                       /* I/O permission bitmap follows */
	.fill 8192, 1, 0                /* every port allowed (for CPL > IOPL) */
	.byte 0xff                      /* required terminator */
boot_tss_end:

/* Interrupt gates for vectors 0..31, DPL 0, present, selector 0x08. */
	.balign 16
idt:
	.set gate_i, 0
	.rept 32
	.word __isr_lo + 16 * gate_i
	.word SEL_KCODE
	.byte 0
	.byte 0x8e
	.word __isr_mid
	.long 0
	.long 0
	.set gate_i, gate_i + 1
	.endr
idt_end:

	.balign 4
	.globl boot_start_info, boot_kvmclock
boot_start_info:
	.long 0
boot_kvmclock:
	.long 0

/* ------------------------------------------------------ stacks, pvclock */
	.bss
	.balign 64
	.globl boot_pvclock
boot_pvclock:
	.skip 64
	.balign 4096
kstack:
	.skip KSTACK_SIZE
kstack_top:
ustack:
	.skip USTACK_SIZE
ustack_top:

	.section .note.GNU-stack, "", @progbits
