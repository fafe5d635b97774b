"""/docs and /redoc work on a machine without internet: the pages and every asset they
reference come from the app itself, and nothing in them points at another host."""

from __future__ import annotations

import re
import pytest

from .conftest import Api

_REFERENCE = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']""")
_ABSOLUTE = re.compile(r"""(?:https?:)?//[a-z0-9.-]+""", re.IGNORECASE)
_CDNS = ("jsdelivr", "unpkg", "cdnjs", "googleapis", "gstatic")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_and_their_assets_come_from_the_app(api: Api, page: str) -> None:
    async with api.client(None) as client:
        r = await client.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        html = r.text
        # Comments aside, the page names no other host: not for a script, a style, a
        # font or the spec (FastAPI's default pages load theirs from a CDN).
        code = re.sub(r"<!--.*?-->", "", html, flags=re.DOTALL)
        assert not [u for u in _ABSOLUTE.findall(code) if "127.0.0.1" not in u], code
        references = [a or b for a, b in _REFERENCE.findall(code)]
        assert any(ref.endswith(".js") for ref in references), references
        assert "/openapi.json" in references
        for ref in references:
            assert ref.startswith("/"), ref
            asset = await client.get(ref)
            assert asset.status_code == 200, (ref, asset.status_code)
            assert len(asset.content) > 0
            if ref.endswith(".js"):
                assert "javascript" in asset.headers["content-type"]
                # The bundle itself fetches nothing from a CDN or a font service at run time.
                assert not any(cdn in asset.text for cdn in _CDNS), ref

