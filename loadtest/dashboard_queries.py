#!/usr/bin/env python3
"""Evaluates every query of every panel of a Grafana dashboard against a Prometheus
and fails, naming the panel, if one returns no data (no series, or only NaN or Inf): a
panel whose metric was renamed, or whose query no longer parses, fails here.

    loadtest/dashboard_queries.py --prometheus http://127.0.0.1:9190 \
        [--dashboard deploy/grafana/voucherd.json] [--window 30s] [--with-k6]

Dashboard variables are substituted as Grafana would with every instance selected
($instance -> .*, $__rate_interval -> --window). Panels of the row whose title
starts with "k6" need a k6 run streaming to the Prometheus: checked only with
--with-k6, and listed as not checked otherwise. With --rules, the alert rules
Prometheus loaded must all evaluate without error. The layout is checked too (ids,
grid, data source variable). Standard library only.
"""

import argparse
import json
import math
import re
import sys
import urllib.parse
import urllib.request


def substitute(expr, window):
    values = {
        "__rate_interval": window,
        "__interval": window,
        "__range": window,
        "instance": ".*",
    }

    def value(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise ValueError(f"unknown dashboard variable ${name}")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", value, expr)


def get(url):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def query(prometheus, expr):
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        body = get(url)
    except urllib.error.HTTPError as e:
        return None, f"HTTP {e.code}: {e.read().decode(errors='replace')[:300]}"
    if body.get("status") != "success":
        return None, body.get("error", "query failed")
    result = body["data"]["result"]
    if body["data"]["resultType"] == "scalar":
        result = [{"metric": {}, "value": result}]
    return result, None


def panels_with_rows(dashboard):
    """(row title, panel) for every panel that is not a row, collapsed rows included."""
    row = ""
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            row = panel.get("title", "")
            for inner in panel.get("panels", []):
                yield row, inner
            continue
        yield row, panel


def structure(dashboard):
    """What Grafana would show wrongly or refuse, found without it: panel ids unique,
    every panel inside the 24-column grid and overlapping none, every query on the
    dashboard's data source variable (so the file imports into any Grafana)."""
    problems, seen, boxes = [], set(), []
    variables = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    if "datasource" not in variables:
        problems.append("no `datasource` variable: panels would name one Grafana's data source")
    for panel in dashboard["panels"]:
        title = panel.get("title", "?")
        if panel.get("id") in seen:
            problems.append(f"{title}: id {panel.get('id')} used twice")
        seen.add(panel.get("id"))
        g = panel.get("gridPos", {})
        x, y, w, h = (g.get(k, -1) for k in ("x", "y", "w", "h"))
        if min(x, y) < 0 or w <= 0 or h <= 0 or x + w > 24:
            problems.append(f"{title}: gridPos {g} outside the 24-column grid")
        for other, (ox, oy, ow, oh) in boxes:
            if x < ox + ow and ox < x + w and y < oy + oh and oy < y + h:
                problems.append(f"{title}: overlaps {other}")
        boxes.append((title, (x, y, w, h)))
        for t in panel.get("targets", []):
            if t.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{title} [{t.get('refId')}]: not on the ${{datasource}} variable")
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--dashboard", default="deploy/grafana/voucherd.json")
    ap.add_argument("--window", default="30s")
    ap.add_argument("--with-k6", action="store_true")
    ap.add_argument("--rules", action="store_true")
    args = ap.parse_args()

    with open(args.dashboard, encoding="utf-8") as f:
        dashboard = json.load(f)
    failures, checked, skipped = structure(dashboard), 0, []
    for row, panel in panels_with_rows(dashboard):
        title = panel.get("title", f"panel {panel.get('id')}")
        targets = [t for t in panel.get("targets", []) if t.get("expr", "").strip()]
        if not targets:
            failures.append(f"{title}: the panel has no query")
            continue
        if row.lower().startswith("k6") and not args.with_k6:
            skipped.append(title)
            continue
        for target in targets:
            try:
                expr = substitute(target["expr"], args.window)
            except ValueError as e:
                failures.append(f"{title} [{target.get('refId')}]: {e}")
                continue
            result, error = query(args.prometheus, expr)
            checked += 1
            if error:
                failures.append(f"{title} [{target.get('refId')}]: {error}\n    {expr}")
                continue
            values = [float(s["value"][1]) for s in result]
            real = [v for v in values if math.isfinite(v)]
            if not real:
                what = "no series" if not values else f"{len(values)} series, none finite (NaN or Inf)"
                failures.append(f"{title} [{target.get('refId')}]: {what}\n    {expr}")
            else:
                shown = ", ".join(f"{v:g}" for v in real[:3]) + (" ..." if len(real) > 3 else "")
                print(f"ok   {title} [{target.get('refId')}]: {len(real)} series ({shown})")
    for title in skipped:
        print(f"skip {title}: a k6 panel (checked with --with-k6, while k6 streams here)")

    if args.rules:
        groups = get(f"{args.prometheus}/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if not rules:
            failures.append("Prometheus loaded no alert rules")
        for r in rules:
            if r.get("health") != "ok":
                failures.append(f"alert rule {r['name']}: {r.get('health')} {r.get('lastError', '')}")
        print(f"ok   {len(rules)} alert rules evaluate without error")

    if failures:
        print(f"\n{len(failures)} problems with {args.dashboard} (a query without data, or its layout):", file=sys.stderr)
        for f in failures:
            print(f"FAIL {f}", file=sys.stderr)
        return 1
    print(f"all {checked} queries of {args.dashboard} returned data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
