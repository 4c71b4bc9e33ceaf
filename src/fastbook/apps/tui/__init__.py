"""The screens of fastbook-edge: what a person sees of their own replica.

`session` follows this client's reports (short order refs, fills, position), `liveness` names the
replica's state for the status bar, `describe` turns reports into human lines, and `app` is the
full-screen terminal UI (textual). None of it touches the book: everything shown comes from the
edge's replica (EdgeNode, through fastbook.edge.client.Edge) and its reports.
"""
