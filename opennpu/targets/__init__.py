"""Hardware targets. Each target is a self-contained package (it never imports another target); it may use
opennpu.ir, opennpu.quant and opennpu.errors."""
