"""The viewer's stylesheet and script, inlined into every page (no network, no build step)."""

from __future__ import annotations

from ncd.viewer.script import SCRIPT

__all__ = ["CSS", "SCRIPT"]

CSS = r"""
*{box-sizing:border-box}
html,body{margin:0;height:100%;color:#222;background:#fafafa;
  font:13px/1.35 system-ui,-apple-system,'Segoe UI','DejaVu Sans',sans-serif}
body{display:flex;flex-direction:column;overflow:hidden}
#ncd-bar{display:flex;align-items:center;gap:6px;padding:6px 8px;border-bottom:1px solid #ddd;background:#fff;
  flex:none;flex-wrap:wrap}
#ncd-name{font-weight:600;margin-right:4px;max-width:22em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
#ncd-crumbs{display:flex;gap:2px;flex:1;min-width:8em;overflow:hidden;white-space:nowrap}
#ncd-crumbs button{border:none;background:none;color:#2a5db0;padding:2px 3px;cursor:pointer;font:inherit}
#ncd-crumbs button[aria-current]{color:#222;font-weight:600;cursor:default}
#ncd-crumbs span{color:#999}
#ncd-bar>button{font:inherit;padding:3px 8px;border:1px solid #ccc;border-radius:4px;background:#f6f6f6;cursor:pointer}
#ncd-bar>button:hover{background:#eaeaea}
#ncd-search-wrap{position:relative}
#ncd-search{font:inherit;padding:3px 6px;width:14em;border:1px solid #bbb;border-radius:4px}
#ncd-results{position:absolute;right:0;top:100%;z-index:20;margin:2px 0 0;padding:2px 0;list-style:none;background:#fff;
  border:1px solid #ccc;border-radius:4px;box-shadow:0 3px 10px rgba(0,0,0,.15);
  min-width:18em;max-width:min(40em,90vw);max-height:22em;overflow:auto}
#ncd-results li{padding:3px 8px;cursor:pointer;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
#ncd-results li.ncd-active,#ncd-results li:hover{background:#e8effa}
#ncd-results li small{color:#777;margin-left:6px}
#ncd-results li em{font-style:normal;font-size:11px;color:#fff;background:#8a8f98;border-radius:3px;padding:0 4px;margin-left:6px}
#ncd-results li.ncd-none{color:#777;cursor:default;background:none}
#ncd-stage{flex:1;position:relative;overflow:hidden;cursor:grab;background:#fff;touch-action:none}
#ncd-stage.ncd-dragging{cursor:grabbing}
#ncd-canvas{position:absolute;left:0;top:0;transform-origin:0 0}
#ncd-canvas svg.ncd-view{display:block;position:absolute;box-shadow:0 0 0 1px #e6e6e6}
#ncd-help{flex:none;padding:3px 8px;color:#666;border-top:1px solid #e4e4e4;background:#fff;font-size:12px}
#ncd-tip{position:fixed;z-index:30;pointer-events:none;max-width:34em;background:#fffef6;border:1px solid #c9c2a0;
  border-radius:4px;box-shadow:0 3px 10px rgba(0,0,0,.18);padding:5px 8px;font-size:12px}
#ncd-tip b{display:block;margin-bottom:3px;font-size:13px}
#ncd-tip table{border-collapse:collapse}
#ncd-tip td{padding:1px 6px 1px 0;vertical-align:top;overflow-wrap:anywhere}
#ncd-tip td:first-child{color:#666;white-space:nowrap}
#ncd-tip i{display:block;color:#2a5db0;margin-top:3px;font-style:normal}
.ncd-hit rect{fill:#000;fill-opacity:0;stroke:none}
.ncd-hit .ncd-box:hover,.ncd-hit .ncd-comp:hover{fill:#2a5db0;fill-opacity:.10;stroke:#2a5db0;stroke-width:1}
.ncd-hit .ncd-comp,.ncd-hit .ncd-fence.ncd-open{cursor:pointer}
.ncd-hit .ncd-comp.ncd-open{fill:#2a5db0;fill-opacity:.06;stroke:#2a5db0;stroke-width:1.6;stroke-dasharray:5 3}
.ncd-hit .ncd-fence.ncd-open:hover{stroke:#2a5db0;stroke-width:1.2;stroke-dasharray:4 3}
.ncd-hit path{fill:none;stroke:#000;stroke-opacity:0;stroke-width:7;stroke-linecap:round}
.ncd-hit path:hover{stroke:#e07b00;stroke-opacity:.45;stroke-width:4}
.ncd-hit .ncd-flash{fill:#f5a623;fill-opacity:.25;stroke:#e07b00;stroke-width:2;stroke-opacity:.9}
.ncd-hit path.ncd-flash{fill:none;stroke-width:5;stroke-opacity:.6}
"""
