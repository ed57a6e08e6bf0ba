"""Test-only stand-in for the three timm helpers the reference ``mobile_sam`` imports.

Real timm imports torchvision (absent beside this CPU torch build) all through its package, so
the reference TinyViT gets these equivalents when the tests put ``tests/stubs`` on ``sys.path``.
None of them changes what a loaded model computes: ``DropPath`` is the identity outside
training (MobileSAM builds it with rate 0 anyway), ``trunc_normal_`` only sets initial
weights, and ``register_model`` only records a name.
"""
