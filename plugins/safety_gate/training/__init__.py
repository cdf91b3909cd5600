"""Fine-tuning at small scale: the aligned default adapter and the attacks of Qi et al. (ICLR 2024)."""
