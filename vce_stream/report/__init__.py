"""The review report (issue 14): one self-contained HTML page per exam for a human reader.

Modules: `thumbnails` (KeyFrameCollector: bounded top-K key frames captured while the exam streams),
`page` (render_report: the HTML, with Jinja2 and inline SVG), `cli` (`vce-stream report` for a finished
exam). Importing this package imports neither torch nor Jinja2.
"""
