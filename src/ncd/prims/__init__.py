"""Primitive families: one module each, declaring primitives and their public constructors."""
