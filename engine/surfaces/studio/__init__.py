"""kam studio: business people change a policy in the browser and see, before saving, who moves,
how much money moves and whether every guarantee still holds.

`app` is the web server (Starlette) over a `engine.run.workspace.Workspace`; `views` turns the
workspace's answers into what the page shows; `git` commits a saved change on a new branch;
`static/` is the page itself (HTML, CSS and plain JavaScript, no build step, nothing fetched from
the internet).
"""
