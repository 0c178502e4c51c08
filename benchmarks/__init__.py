"""Ratio benchmarks: xaudit against plain Captum usage and the hardware limit, side by side."""
