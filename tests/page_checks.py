"""What the Content-Security-Policy would block in a page, found by reading its HTML.

The CSP allows scripts and styles from our own origin only: no inline <script> or <style>,
no style="" or on*="" attributes, no javascript: URLs, and nothing htmx would have to eval.
"""

from __future__ import annotations

from html.parser import HTMLParser

# Script types a browser does not run, so the CSP does not apply to them.
DATA_SCRIPT_TYPES = {"application/json", "application/ld+json"}
EVAL_ATTRIBUTES = ("hx-on", "hx-vars", "data-hx-on")


class _CspScanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.violations: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        where = self.get_starttag_text() or tag
        if tag == "script" and "src" not in attributes and attributes.get("type") not in DATA_SCRIPT_TYPES:
            self.violations.append(f"inline script: {where}")
        if tag == "style":
            self.violations.append("inline <style> element")
        for name, value in attrs:
            value = (value or "").strip().lower()
            if name == "style":
                self.violations.append(f"style attribute: {where}")
            elif name.startswith("on") or name.startswith(EVAL_ATTRIBUTES):
                self.violations.append(f"inline handler {name}: {where}")
            elif name in ("href", "src", "action", "formaction") and value.startswith("javascript:"):
                self.violations.append(f"javascript: URL: {where}")
            elif name in ("hx-vals", "data-hx-vals") and value.startswith("js:"):
                self.violations.append(f"evaluated hx-vals: {where}")
            elif tag in ("script", "link") and name in ("src", "href") and value.startswith(("http:", "https:", "//")):
                self.violations.append(f"resource from another origin: {where}")


def csp_violations(html: str) -> list[str]:
    scanner = _CspScanner()
    scanner.feed(html)
    scanner.close()
    return scanner.violations
