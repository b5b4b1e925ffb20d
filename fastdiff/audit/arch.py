"""The GPU architectures the audit compiles for, and what limits a block on each."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Arch:
    name: str            # as nvcc spells it: sm_80, sm_86, sm_90a
    capability: int      # Triton's GPUTarget arch: 80, 86, 90 (Triton builds 90 as sm_90a)
    nvcc: str            # csrc/build.py's arch: 80, 86, 90a
    smem_optin: int      # the shared memory a block may opt into (bytes)
    smem_per_sm: int     # shared memory per SM; each resident block also takes 1 KiB of it
    sm_count: int        # SMs of the GPU the launchers plan for: A100, A40, H100 SXM
    regs_per_sm: int = 65536
    threads_per_sm: int = 2048
    blocks_per_sm: int = 32
    max_regs_per_thread: int = 255

    def blocks(self, regs: int, smem: int, threads: int) -> tuple[int, str]:
        """Resident blocks per SM of a kernel using `regs` per thread, `smem` bytes per block and
        `threads` per block, and what limits it (regs, smem, threads or blocks)."""
        warps = -(-threads // 32)
        regs_per_warp = -(-max(regs, 1) * 32 // 256) * 256  # allocated per warp in units of 256
        limits = {
            "regs": self.regs_per_sm // (regs_per_warp * warps),
            "smem": self.smem_per_sm // (smem + 1024) if smem else self.blocks_per_sm,
            "threads": self.threads_per_sm // threads,
            "blocks": self.blocks_per_sm,
        }
        by = min(limits, key=limits.get)
        return limits[by], by


ARCHS = {
    "sm_80": Arch("sm_80", 80, "80", smem_optin=166912, smem_per_sm=167936, sm_count=108),
    "sm_86": Arch("sm_86", 86, "86", smem_optin=101376, smem_per_sm=102400, sm_count=84, threads_per_sm=1536,
                  blocks_per_sm=16),
    "sm_90a": Arch("sm_90a", 90, "90a", smem_optin=232448, smem_per_sm=233472, sm_count=132),
}

# The H100 anchors of docs/design.md, for the roofline floor: copy bandwidth and the dense bf16 rate.
H100_BYTES_PER_S = 3.0e12
H100_FLOPS = 694e12


def floor_us(nbytes: int, flops: int) -> float:
    """The least time on an H100: the slower of moving the bytes and doing the arithmetic."""
    return max(nbytes / H100_BYTES_PER_S, flops / H100_FLOPS) * 1e6
