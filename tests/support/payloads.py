"""Hostile text: what a model completion, a data set row, a teacher's reply or a name may carry,
aimed at each place the project shows text (HTML text, attributes, embedded JSON, plotly's own
markup, a terminal, a log file). Each HTML payload that ran would leave a mark the page could not
have otherwise: an attribute `data-pwned` on <body>, an element with an id starting `pwned`, or a
changed document title.
"""

from __future__ import annotations

from html.parser import HTMLParser

MARK = "document.body.setAttribute('data-pwned','{}')"

# (what it aims at, payload)
HTML_PAYLOADS = (
    ("script", f"<script>{MARK.format('script')};document.title='PWNED'</script>"),
    ("img", f'<img id="pwned-img" src=x onerror="{MARK.format("img")}">'),
    ("attr-dq", f'" onmouseover="{MARK.format("dq")}" autofocus onfocus="{MARK.format("dq")}" x="'),
    ("attr-sq", f"' onfocus='{MARK.format('sq')}' autofocus x='"),
    ("svg", f'"><svg id="pwned-svg" onload="{MARK.format("svg")}"></svg>'),
    ("json", f"</script><script>{MARK.format('json')}</script><!--"),
    ("href", f'<a id="pwned-a" href="javascript:{MARK.format("href")}">x</a>'),
    ("iframe", f'<iframe id="pwned-iframe" srcdoc="<script>parent.{MARK.format("if")}</script>">'),
    ("style", "<style>body { display: none }</style><b id='pwned-b'>bold</b>"),
    ("comment", "<!-- an open comment hides what follows"),
    ("textarea", "</pre></details></textarea><plaintext>"),
    ("plotly", "<a href='javascript:alert(1)'>plotly link</a> %{x} <br> &amp; &lt;"),
)
# what a terminal or a log reads as commands: rich markup and ANSI / OSC escape sequences
TERMINAL_PAYLOADS = (
    ("rich-style", "[bold red]LOUD[/bold red]"),
    ("rich-link", "[link=https://evil.example/]click[/link]"),
    ("ansi-colour", "\x1b[31mRED\x1b[0m"),
    ("ansi-clear", "\x1b[2J\x1b[H"),
    ("osc-link", "\x1b]8;;https://evil.example/\x07link\x1b]8;;\x07"),
    ("osc-title", "\x1b]0;owned\x07"),
    ("csi-c1", "\x9b31mC1"),
    ("carriage", "ok\rFORGED"),
    ("bidi", "abc\u202edcba"),
    ("newline", "one\n2026-01-01 00:00:00 INFO forged log line"),
)
ESCAPES = ("\x1b", "\x07", "\x9b", "\r", "\u202e")

ALL = tuple(p for _, p in HTML_PAYLOADS + TERMINAL_PAYLOADS)


def every(prefix: str = "") -> str:
    """All payloads in one string (a field that carries every attack at once)."""
    return prefix + " ".join(ALL)


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self.text: list[str] = []
        self.body: dict[str, str | None] = {}
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "body":
            self.body = named
        if tag == "title":
            self._in_title = True
        if tag in ("img", "iframe", "object", "embed", "plaintext"):
            self.found.append(f"<{tag}>")
        if tag == "style" and self.body:  # the page's own style sits in <head>
            self.found.append("<style> in the body")
        if str(named.get("id") or "").startswith("pwned"):
            self.found.append(f"<{tag} id={named['id']}>")
        for k, v in attrs:
            if k.startswith("on") or k == "autofocus":
                self.found.append(f"<{tag} {k}>")
            if k in ("href", "src", "srcdoc") and "javascript:" in str(v).lower():
                self.found.append(f"<{tag} {k}=javascript:>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_title:
            self.title += data


def inspect_dom(dom: str) -> tuple[list[str], str]:
    """(what a payload left in the DOM: elements, handlers, the body's mark, a changed title; the
    page's text, entities decoded)."""
    parser = _Elements()
    parser.feed(dom)
    found = list(parser.found)
    if "data-pwned" in parser.body:
        found.append(f"<body data-pwned={parser.body['data-pwned']}>: a payload ran")
    if "PWNED" in parser.title:
        found.append("the title was changed: a payload ran")
    return found, "".join(parser.text)
