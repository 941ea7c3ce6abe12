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

from locust import HttpUser, between, task

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


class SalesUser(HttpUser):
    """A store front: single purchases in the seeds' form, batches from a POS."""

    weight = 1
    wait_time = between(0, WAIT)

    @task(6)
    def purchase(self):
        sale = {
            "categoria": random.randint(1, 4),
            "producto_id": f"P{random.randint(1, 200)}",
            "precio": round(random.uniform(1, 2000), 2),
            "cantidad_vendida": random.randint(1, 10),
        }
        ingest(self, "/purchase", json.dumps(sale), 1, "/purchase")

    @task(2)
    def sales_batch(self):
        batch = [canonical_sale() for _ in range(BATCH)]
        ingest(self, "/v1/sales", json.dumps(batch), BATCH, "/v1/sales [array]")

    @task(1)
    def sales_ndjson(self):
        batch = [canonical_sale() for _ in range(BATCH)]
        body = "\n".join(json.dumps(s) for s in batch)
        ingest(self, "/v1/sales", body, BATCH, "/v1/sales [ndjson]", ndjson=True)

    @task(1)
    def dashboards(self):
        read(self, "/v1/kpis/sales", "/v1/kpis/sales")
        category = random.choice(CATEGORIES)
        read(self, f"/v1/rankings/products?category={category}&limit=10",
             "/v1/rankings/products")
        read(self, f"/v1/sales/monitored/{category}/prices?limit=50",
             "/v1/sales/monitored/[category]/prices")


class TweetsUser(HttpUser):
    """Weather stations tweeting: single tweets in the seeds' form, and batches."""

    weight = 1
    wait_time = between(0, WAIT)

    @task(6)
    def tweet(self):
        tweet = {
            "municipality": random.choice(MUNICIPALITIES),
            "weather": random.choice(WEATHERS),
            "temperature": random.randint(-5, 40),
            "humidity": random.randint(5, 100),
        }
        ingest(self, "/input", json.dumps(tweet), 1, "/input")

    @task(3)
    def tweets_batch(self):
        batch = [canonical_tweet() for _ in range(BATCH)]
        ingest(self, "/v1/tweets", json.dumps(batch), BATCH, "/v1/tweets [array]")

    @task(1)
    def dashboards(self):
        read(self, "/v1/kpis/tweets", "/v1/kpis/tweets")
        read(self, "/v1/rankings/locations?limit=10", "/v1/rankings/locations")
