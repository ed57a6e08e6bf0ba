"""Test-only stand-in for the two torchvision pieces the reference `segment_anything` imports.

The real torchvision does not import beside the CPU build of torch used here, so the reference
package gets these small equivalents when the tests put `tests/stubs` on `sys.path`.
"""
