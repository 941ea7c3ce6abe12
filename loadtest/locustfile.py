"""Locust load for flujo: sales users and weather-tweet users.

The seeds' traffic, kept as they sent it, plus flujo's own forms:

- SalesUser posts single sales to ``/purchase`` in the seeds' Spanish form
  (``categoria`` 1-4, ``producto_id``, ``precio``, ``cantidad_vendida``), and
  batches to ``/v1/sales`` in the canonical form (JSON array and NDJSON).
- TweetsUser posts single tweets to ``/input`` in the seeds' form
  (``municipality``, ``weather``, ``temperature``, ``humidity``), and batches to
  ``/v1/tweets``.
- Both now and then read what the dashboards show (``/v1/kpis/*``,
  ``/v1/rankings/*``).

Every ingest request must be answered 202 with ``accepted`` equal to the number of
events sent; anything else (a 429 too) counts as a failure.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080
    locust -f loadtest/locustfile.py --headless -u 50 -r 10 -t 1m --host http://127.0.0.1:8080

Environment: FLUJO_LOCUST_BATCH (events per batch request, default 20),
FLUJO_LOCUST_WAIT (max seconds between a user's tasks, default 0.2).
"""

import json
import os
import random
import uuid

from locust import HttpUser, between

BATCH = int(os.environ.get("FLUJO_LOCUST_BATCH", "20"))
WAIT = float(os.environ.get("FLUJO_LOCUST_WAIT", "0.2"))

CATEGORIES = ["electronics", "clothing", "home", "beauty"]
WEATHERS = ["sunny", "cloudy", "rainy", "foggy", "snowy", "stormy"]
# The seeds' municipalities of Guatemala.
MUNICIPALITIES = [
    "Guatemala", "Mixco", "Villa Nueva", "Antigua", "Quetzaltenango", "Escuintla",
    "Coban", "Huehuetenango", "Chimaltenango", "Puerto Barrios", "Flores", "Zacapa",
]


def ingest(user, path, body, events, name, ndjson=False):
    """POSTs a body and checks flujo took every event."""
    headers = {"Content-Type": "application/x-ndjson" if ndjson else "application/json"}
    with user.client.post(path, data=body, headers=headers, name=name,
                          catch_response=True) as resp:
        if resp.status_code != 202:
            resp.failure(f"{resp.status_code}: {resp.text[:200]}")
            return
        try:
            accepted = resp.json().get("accepted")
        except ValueError:
            resp.failure(f"202 without a JSON body: {resp.text[:200]}")
            return
        if accepted != events:
            resp.failure(f"accepted {accepted} of {events} events")
        else:
            resp.success()


def read(user, path, name):
    with user.client.get(path, name=name, catch_response=True) as resp:
        if resp.status_code != 200:
            resp.failure(f"{resp.status_code}: {resp.text[:200]}")
        else:
            resp.success()


def canonical_sale():
    return {
        "id": str(uuid.uuid4()),
        "category": random.choice(CATEGORIES),
        "product_id": f"P{random.randint(1, 200)}",
        "price": round(random.uniform(1, 2000), 2),
        "quantity": random.randint(1, 10),
    }


def canonical_tweet():
    return {
        "id": str(uuid.uuid4()),
        "location": random.choice(MUNICIPALITIES),
        "weather": random.choice(WEATHERS),
        "temperature": round(random.uniform(-5, 40), 1),
        "humidity": round(random.uniform(5, 100), 1),
        "text": "load test",
    }


def seed_sale():
    """A sale in the seeds' Spanish form."""
    return {
        "categoria": random.randint(1, 4),
        "producto_id": f"P{random.randint(1, 200)}",
        "precio": round(random.uniform(1, 2000), 2),
        "cantidad_vendida": random.randint(1, 10),
    }


def seed_tweet():
    """A tweet in the seeds' form."""
    return {
        "municipality": random.choice(MUNICIPALITIES),
        "weather": random.choice(WEATHERS),
        "temperature": random.randint(-5, 40),
        "humidity": random.randint(5, 100),
    }


def single(path, make_event):
    """A task posting one event from ``make_event`` to ``path``, named after the path."""
    def post(user):
        ingest(user, path, json.dumps(make_event()), 1, path)
    return post


def batch(path, make_event, ndjson=False):
    """A task posting ``BATCH`` events from ``make_event`` to ``path``, as a JSON
    array or as NDJSON, named ``path [array]`` or ``path [ndjson]``."""
    def post(user):
        events = [make_event() for _ in range(BATCH)]
        if ndjson:
            body, form = "\n".join(json.dumps(e) for e in events), "ndjson"
        else:
            body, form = json.dumps(events), "array"
        ingest(user, path, body, BATCH, f"{path} [{form}]", ndjson=ndjson)
    return post


def sales_dashboards(user):
    """What the sales dashboards read: the KPIs, one category's ranking and prices."""
    read(user, "/v1/kpis/sales", "/v1/kpis/sales")
    category = random.choice(CATEGORIES)
    read(user, f"/v1/rankings/products?category={category}&limit=10",
         "/v1/rankings/products")
    read(user, f"/v1/sales/monitored/{category}/prices?limit=50",
         "/v1/sales/monitored/[category]/prices")


def tweets_dashboards(user):
    """What the weather dashboards read: the KPIs and the location ranking."""
    read(user, "/v1/kpis/tweets", "/v1/kpis/tweets")
    read(user, "/v1/rankings/locations?limit=10", "/v1/rankings/locations")


class FlujoUser(HttpUser):
    """What both users share: the same weight, a short random wait between tasks."""

    abstract = True
    weight = 1
    wait_time = between(0, WAIT)


class SalesUser(FlujoUser):
    """A store front: single purchases in the seeds' form, batches from a POS."""

    tasks = {
        single("/purchase", seed_sale): 6,
        batch("/v1/sales", canonical_sale): 2,
        batch("/v1/sales", canonical_sale, ndjson=True): 1,
        sales_dashboards: 1,
    }


class TweetsUser(FlujoUser):
    """Weather stations tweeting: single tweets in the seeds' form, and batches."""

    tasks = {
        single("/input", seed_tweet): 6,
        batch("/v1/tweets", canonical_tweet): 3,
        tweets_dashboards: 1,
    }
