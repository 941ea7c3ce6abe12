//! How clients put events in request bodies: JSON object, array or NDJSON, and the
//! spellings of a sale and a tweet (English fields, the seeds' Spanish forms), plus
//! small builders of the load generator's events.

use flujo_loadgen::generate::{Sale, Tweet, CATEGORIES};
use serde_json::{json, Value};

/// The seeds' Spanish category names, in code order.
pub const SPANISH_CATEGORIES: [&str; 4] = ["Electronica", "Ropa", "Hogar", "Belleza"];

/// How a batch is put in a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// One JSON object (exactly one event).
    Object,
    /// A JSON array.
    Array,
    /// NDJSON, `\n` line ends.
    Ndjson,
    /// NDJSON with CRLF line ends, blank lines and a trailing newline.
    NdjsonCrlf,
}

/// A JSON array of `n` valid sales, as a body: ids `{prefix}{i}`, the categories in
/// turn, `products` product ids in turn, each at `price`, quantity 1.
pub fn sales_array(prefix: &str, n: usize, products: usize, price: f64) -> String {
    let sale = |i: usize| {
        json!({"id": format!("{prefix}{i}"), "category": CATEGORIES[i % 4],
               "product_id": format!("P{}", i % products), "price": price, "quantity": 1})
    };
    Value::from((0..n).map(sale).collect::<Vec<Value>>()).to_string()
}

/// Content-Type and body for `events` in `encoding`.
pub fn encode(events: &[Value], encoding: Encoding) -> (&'static str, String) {
    match encoding {
        Encoding::Object => {
            assert_eq!(events.len(), 1, "an object body holds one event");
            ("application/json", events[0].to_string())
        }
        Encoding::Array => ("application/json", Value::from(events.to_vec()).to_string()),
        Encoding::Ndjson => (
            "application/x-ndjson",
            events
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Encoding::NdjsonCrlf => {
            let mut body = String::from("\r\n");
            for (i, e) in events.iter().enumerate() {
                body.push_str(&e.to_string());
                body.push_str("\r\n");
                if i % 3 == 0 {
                    body.push_str("\r\n   \r\n");
                }
            }
            ("application/x-ndjson", body)
        }
    }
}

/// The ways clients spell a sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleForm {
    /// `category` (English name), `product_id`, `price`, `quantity`.
    English,
    /// The seeds' `categoria` 1–4, `producto_id`, `precio`, `cantidad_vendida`.
    SeedCodes,
    /// English fields, Spanish category names (Electronica, Ropa, Hogar, Belleza).
    SpanishNames,
    /// Spanish fields with Spanish category names, upper-cased.
    SeedNames,
}

/// Every sale form.
pub const SALE_FORMS: [SaleForm; 4] = [
    SaleForm::English,
    SaleForm::SeedCodes,
    SaleForm::SpanishNames,
    SaleForm::SeedNames,
];

fn category_index(category: &str) -> usize {
    CATEGORIES
        .iter()
        .position(|c| *c == category)
        .unwrap_or_else(|| panic!("not a category: {category}"))
}

/// The JSON a client in `form` sends for `s` (with its id).
pub fn sale_json(s: &Sale, form: SaleForm) -> Value {
    let i = category_index(s.category);
    match form {
        SaleForm::English => json!({
            "id": s.id, "ts": s.ts, "category": s.category, "product_id": s.product_id,
            "price": s.price, "quantity": s.quantity,
        }),
        SaleForm::SeedCodes => json!({
            "id": s.id, "ts": s.ts, "categoria": i + 1, "producto_id": s.product_id,
            "precio": s.price, "cantidad_vendida": s.quantity,
        }),
        SaleForm::SpanishNames => json!({
            "id": s.id, "ts": s.ts, "category": SPANISH_CATEGORIES[i], "product_id": s.product_id,
            "price": s.price, "quantity": s.quantity,
        }),
        SaleForm::SeedNames => json!({
            "id": s.id, "ts": s.ts, "categoria": SPANISH_CATEGORIES[i].to_uppercase(),
            "producto_id": s.product_id, "precio": s.price, "cantidad_vendida": s.quantity,
        }),
    }
}

/// The JSON of `t`: canonical, or the seeds' form (`municipality`, capitalised
/// weather; integer temperature and humidity when they are whole numbers).
pub fn tweet_json(t: &Tweet, seed_form: bool) -> Value {
    if seed_form {
        let num = |x: f64| {
            if x.fract() == 0.0 {
                json!(x as i64)
            } else {
                json!(x)
            }
        };
        let mut weather = t.weather.to_owned();
        weather[..1].make_ascii_uppercase();
        json!({
            "id": t.id, "municipality": t.location, "weather": weather,
            "temperature": num(t.temperature), "humidity": num(t.humidity),
            "text": format!("{} en {}", weather, t.location),
        })
    } else {
        json!({
            "id": t.id, "location": t.location, "weather": t.weather,
            "temperature": t.temperature, "humidity": t.humidity,
        })
    }
}

/// A sale with these fields, made now.
pub fn sale(id: &str, category: &'static str, product: &str, price: f64, quantity: u64) -> Sale {
    Sale {
        id: id.to_owned(),
        ts: flujo_loadgen::generate::now_ms(),
        category,
        product_id: product.to_owned(),
        price,
        quantity,
    }
}

/// Sale `i` of a test of the order of events (rounds of them, `i` counting on across
/// rounds): the first sale of each category is its "MON" product, and most later ones
/// are too (other products in between); prices and `ts` increase sale by sale, so
/// the price streams, in (`ts`, `id`) order, are in the order sent.
pub fn order_sale(i: u64) -> Sale {
    let category = CATEGORIES[(i % 4) as usize];
    let product = if i < 4 || i % 8 != 7 {
        format!("MON-{category}")
    } else {
        format!("OTHER-{}", i % 5)
    };
    Sale {
        ts: ORDER_TS + i as i64,
        ..sale(&format!("ord-{i}"), category, &product, (i + 1) as f64, 1)
    }
}

/// The `ts` of [`order_sale`] 0 (2020-09-13).
const ORDER_TS: i64 = 1_600_000_000_000;

/// A tweet with these fields and no text.
pub fn tweet(
    id: &str,
    location: &str,
    weather: &'static str,
    temperature: f64,
    humidity: f64,
) -> Tweet {
    Tweet {
        id: id.to_owned(),
        location: location.to_owned(),
        weather,
        temperature,
        humidity,
        text: None,
    }
}
