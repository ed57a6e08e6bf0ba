"""Test-only stand-in for the two torchvision pieces the reference `segment_anything` imports.

The real torchvision does not import beside the CPU build of torch used here, so the reference
package gets these small equivalents when the tests put `tests/stubs` on `sys.path`.

Not an independent reference: `ops.nms`/`batched_nms` here break score ties the way segany
does (stable descending sort, lower index first), so the NMS and automatic-mask parity tests
that run the reference through this stand-in compare segany with segany's own tie rule. Real
torchvision 0.29.1 (with torch 2.14.1, in a separate virtual environment) was checked by hand
to give the same mask sets in the same order on the bundled weights, crop layers and
small-region removal included.
"""
