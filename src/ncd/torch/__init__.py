"""Lowering to PyTorch: readable generated source and compiled ``nn.Module``\\ s."""
