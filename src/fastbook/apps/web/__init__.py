"""The browser view of an edge's own replica (`fastbook-edge --web 127.0.0.1:8080`): a page served by
the edge itself, reading the replica only through the `Edge` API (fastbook.edge.client)."""
