"""`psyche-client dashboard`: a live local web page on one run.

Modules, one job each: `recorder` (the phase timeline and per-round witness/verification log,
from the coordinator states a handle sees), `events` (per-client figures from the JSON-line
event files clients write with `join --events`), `snapshot` (everything the page shows, as one
JSON document), `server` (the stdlib HTTP server: the page and `/api/run`), `page.html` (the
self-contained page: inline JS and SVG, nothing fetched but `/api/run`).
Guide: docs/operator.md, "Dashboard".
"""

from psyche_client.dashboard.server import DashboardServer, start_dashboard

__all__ = ["DashboardServer", "start_dashboard"]
