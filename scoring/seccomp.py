"""A seccomp filter for the sandbox: system calls no test program needs, refused with EPERM.

* the kernel keyring (`add_key`, `request_key`, `keyctl`): keys are per host uid, and every run
  shares one; a key made world-readable is seen in `/proc/keys` by every concurrent run, a
  channel between runs that must not exist;
* `io_uring_*`, `perf_event_open`, `userfaultfd`, `bpf`: kernel attack surface.

The filter is a classic BPF program, built here (no libseccomp), handed to bwrap on a pipe
(`--seccomp FD`); bwrap sets no_new_privs and installs it just before the program runs. It is
made for x86-64, and for the x32 ABI refuses everything; on another architecture no filter is
installed (the rest of the sandbox still holds) and `filter_fd` returns None.
"""

from __future__ import annotations

import errno
import os
import platform
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
# x86-64 system call numbers.
DENIED_X86_64 = {
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "perf_event_open": 298,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
}

_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL = 0x00000000
_OFFSET_NR, _OFFSET_ARCH = 0, 4  # struct seccomp_data


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program() -> bytes:
    """The filter as bwrap reads it: an array of struct sock_filter."""
    denied = sorted(DENIED_X86_64.values())
    insns = [
        _insn(_LD_W_ABS, 0, 0, _OFFSET_ARCH),
        _insn(_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        _insn(_RET_K, 0, 0, _RET_KILL),  # another ABI in an x86-64 process: never ours
        _insn(_LD_W_ABS, 0, 0, _OFFSET_NR),
        _insn(_JGE_K, len(denied) + 1, 0, X32_SYSCALL_BIT),  # x32: refused
    ]
    for i, nr in enumerate(denied):
        # Matched: jump over the remaining checks and the ALLOW to the EPERM return.
        insns.append(_insn(_JEQ_K, len(denied) - i, 0, nr))
    insns.append(_insn(_RET_K, 0, 0, _RET_ALLOW))
    insns.append(_insn(_RET_K, 0, 0, _RET_ERRNO | errno.EPERM))
    return b"".join(insns)


def supported() -> bool:
    return platform.machine() in ("x86_64", "AMD64")


def filter_fd() -> int | None:
    """A readable fd holding the filter (the caller passes it to bwrap, then closes it)."""
    if not supported():
        return None
    data = program()
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)  # a few hundred bytes: fits the pipe's buffer
    finally:
        os.close(write_end)
    return read_end
