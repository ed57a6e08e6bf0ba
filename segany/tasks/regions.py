"""PLACEHOLDER — this file's earlier content was overwritten by mistake.

At 12:11 UTC the helper working on issue 39 (large images, tiles) created a file of the same
name here without noticing that another helper had just written segany/tasks/regions.py
(RegionPredictor, check_view, view_tile; tests/test_tasks_regions.py imports them). That
content is lost from disk and was never committed: please re-create it from your session.
The issue-39 code now lives in segany/tasks/region_files.py and does not use this name.
"""

raise ImportError(
    "segany/tasks/regions.py was overwritten by mistake (see its docstring); re-create it"
)
