"""The login form, as a small HTML page the login route serves (no script: a plain form post)."""

from __future__ import annotations

from html import escape

_STYLE = """
body { font-family: "Source Sans Pro", system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
  background: #fff; color: #31333f; }
main { max-width: 26rem; margin: 10vh auto 0 auto; padding: 0 1rem; }
h1 { font-size: 2.6rem; margin: 0 0 .3rem 0; }
.caption { color: #6b7280; font-size: .9rem; margin: 0 0 1.2rem 0; }
form { border: 1px solid #e5e7eb; border-radius: .5rem; padding: 1rem 1.1rem 1.2rem 1.1rem; }
label { display: block; font-size: .9rem; margin: .6rem 0 .25rem 0; }
input { box-sizing: border-box; width: 100%; font-size: 1rem; padding: .5rem .6rem; border: 1px solid #d1d5db;
  border-radius: .4rem; background: #f9fafb; }
input:focus { outline: 2px solid #1d4ed8; outline-offset: 1px; }
button, a.sso { display: block; box-sizing: border-box; width: 100%; margin-top: 1rem; padding: .55rem;
  font-size: 1rem; border-radius: .4rem; text-align: center; cursor: pointer; }
button { background: #1d4ed8; color: #fff; border: 1px solid #1d4ed8; }
button:hover { background: #1e40af; }
a.sso { color: #1d4ed8; border: 1px solid #1d4ed8; text-decoration: none; }
.message { border-radius: .4rem; padding: .7rem .9rem; margin: 0 0 1rem 0; }
.error { background: #fef2f2; color: #991b1b; }
.notice { background: #eff6ff; color: #1e3a8a; }
"""


def render(*, error: str | None = None, notice: str | None = None, next_path: str = "/", username: str = "",
           sso_label: str | None = None) -> str:
    """The page: a message (an error is announced to screen readers), the username and password form that
    posts to /login, and, when single sign-on is on, its button."""
    message = ""
    if error:
        message = f'<p class="message error" role="alert">{escape(error)}</p>'
    elif notice:
        message = f'<p class="message notice" role="status">{escape(notice)}</p>'
    sso = f'<a class="sso" href="/login/sso">{escape(sso_label)}</a>' if sso_label else ""
    focus_password = " autofocus" if username else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · storyloop annotator</title>
<style>{_STYLE}</style>
</head>
<body>
<main>
<h1>storyloop</h1>
<p class="caption">Judge generated story frames: consistency, then anatomy, then aesthetics.</p>
{message}
<form method="post" action="/login">
<input type="hidden" name="next" value="{escape(next_path, quote=True)}">
<label for="username">Username</label>
<input id="username" name="username" autocomplete="username" required maxlength="320"
 value="{escape(username, quote=True)}"{"" if username else " autofocus"}>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required
 maxlength="1024"{focus_password}>
<button type="submit">Log in</button>
</form>
{sso}
</main>
</body>
</html>
"""
