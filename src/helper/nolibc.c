/* nolibc.c - what a program with no C library must define once: the entry point _start,
 * errno, environ, and the few memory functions the compiler may call on its own. Built
 * only with LEASHED_NOLIBC (Linux x86_64 / aarch64); see nolibc.h. */
#include "nolibc.h"

int errno;
char **environ;

#if defined(__x86_64__)
__asm__(".text\n"
	".global _start\n"
	"_start:\n"
	"	xor %ebp, %ebp\n"
	"	mov %rsp, %rdi\n" /* -> argc, argv[], NULL, envp[], NULL */
	"	and $-16, %rsp\n"
	"	call lh_start_c\n"
	"	hlt\n");
#else
__asm__(".text\n"
	".global _start\n"
	"_start:\n"
	"	mov x29, xzr\n"
	"	mov x30, xzr\n"
	"	mov x0, sp\n" /* -> argc, argv[], NULL, envp[], NULL */
	"	and sp, x0, #-16\n"
	"	bl lh_start_c\n"
	"	b .\n");
#endif

/* Entered from _start with the initial stack: argc, argv[argc], NULL, envp[], NULL. */
__attribute__((used, noreturn)) void lh_start_c(long *sp);
__attribute__((used, noreturn)) void lh_start_c(long *sp)
{
	int argc = (int)sp[0];
	char **argv = (char **)(sp + 1);
	environ = argv + argc + 1;
	_exit(main(argc, argv));
}

/* The empty asm keeps the compiler from turning these loops back into calls to
 * themselves. */
void *memset(void *dst, int c, size_t n)
{
	unsigned char *d = dst;
	while (n--) {
		*d++ = (unsigned char)c;
		__asm__ volatile("" ::: "memory");
	}
	return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;
	if (d < s) {
		while (n--) {
			*d++ = *s++;
			__asm__ volatile("" ::: "memory");
		}
	} else {
		while (n--) {
			d[n] = s[n];
			__asm__ volatile("" ::: "memory");
		}
	}
	return dst;
}

void *memcpy(void *dst, const void *src, size_t n) { return memmove(dst, src, n); }

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;
	for (; n; n--, x++, y++)
		if (*x != *y)
			return *x - *y;
	return 0;
}

size_t strlen(const char *s)
{
	const char *p = s;
	while (*p)
		p++;
	return (size_t)(p - s);
}
