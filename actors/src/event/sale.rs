//! Sales: [`Category`], the canonical [`Sale`], and [`RawSale`] with the sale rules.

use super::{chars_between, finite, id_and_ts, Coded, FieldError, RawField, Stamp};
use super::{MAX_NAME_CHARS, MAX_QUANTITY};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Product category of a sale. Numeric codes 1–4 follow this order.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Code 1; Spanish `Electronica`.
    Electronics,
    /// Code 2; Spanish `Ropa`.
    Clothing,
    /// Code 3; Spanish `Hogar`.
    Home,
    /// Code 4; Spanish `Belleza`.
    Beauty,
}

impl Category {
    /// Every category, in code order.
    pub const ALL: [Category; 4] = [
        Category::Electronics,
        Category::Clothing,
        Category::Home,
        Category::Beauty,
    ];

    /// Canonical English name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Category::Electronics => "electronics",
            Category::Clothing => "clothing",
            Category::Home => "home",
            Category::Beauty => "beauty",
        }
    }

    /// Position in [`Category::ALL`] (code − 1).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Parses an English or Spanish name (any case, accents optional) or a code "1"–"4".
    pub fn from_name(name: &str) -> Option<Category> {
        // The canonical spelling, as most clients send it, needs no lowercase copy.
        if let Some(c) = Category::ALL.into_iter().find(|c| c.as_str() == name) {
            return Some(c);
        }
        let lower = name.trim().to_lowercase();
        match lower.as_str() {
            "electronics" | "electronica" | "electrónica" | "1" => Some(Category::Electronics),
            "clothing" | "ropa" | "2" => Some(Category::Clothing),
            "home" | "hogar" | "3" => Some(Category::Home),
            "beauty" | "belleza" | "4" => Some(Category::Beauty),
            _ => None,
        }
    }

    /// The numeric code, 1–4 (also the protobuf enum value).
    pub const fn code(self) -> i64 {
        self as i64 + 1
    }

    /// Parses a numeric code 1–4.
    pub fn from_code(code: i64) -> Option<Category> {
        match code {
            1..=4 => Some(Category::ALL[(code - 1) as usize]),
            _ => None,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated sale, in canonical form (this is also its JSON on the bus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sale {
    /// Event id, unique per kind.
    pub id: String,
    /// Event time, ms since the Unix epoch.
    pub ts: i64,
    /// Product category.
    pub category: Category,
    /// Product id, 1–64 characters.
    pub product_id: String,
    /// Unit price, finite and > 0.
    pub price: f64,
    /// Units sold, 1–1,000,000.
    pub quantity: u64,
}

/// A sale as a transport delivered it: each field missing, given, or malformed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawSale {
    /// Event id (stamped when missing).
    pub id: RawField<String>,
    /// Event time, ms since the epoch (stamped when missing).
    pub ts: RawField<i64>,
    /// Product category.
    pub category: RawField<Category>,
    /// Product id.
    pub product_id: RawField<String>,
    /// Unit price.
    pub price: RawField<f64>,
    /// Units sold.
    pub quantity: RawField<i64>,
}

impl Coded for Category {
    const FIELD: &'static str = "category";
    const EXPECTED: &'static str =
        "electronics, clothing, home, beauty (or Electronica, Ropa, Hogar, Belleza, or 1-4)";
    const WITH_CODE: fn(i64) -> Option<Self> = Category::from_code;
}

impl RawSale {
    /// Applies the sale rules, in field order, and stamps a missing `id`/`ts`.
    pub fn validate(self, stamp: &mut impl Stamp) -> Result<Sale, FieldError> {
        let category = self.category.required("category")?;
        let product_id = self.product_id.required("product_id")?;
        let product_id = chars_between("product_id", product_id, 1, MAX_NAME_CHARS)?;
        let price = finite("price", self.price.required("price")?)?;
        if price <= 0.0 {
            return Err(FieldError::new(
                "price",
                format!("field `price` must be greater than 0, got {price}"),
            ));
        }
        let quantity = self.quantity.required("quantity")?;
        if !(1..=MAX_QUANTITY as i64).contains(&quantity) {
            return Err(FieldError::new(
                "quantity",
                format!(
                    "field `quantity` must be an integer from 1 to {MAX_QUANTITY}, got {quantity}"
                ),
            ));
        }
        if !(price * quantity as f64).is_finite() {
            return Err(FieldError::new(
                "price",
                format!("field `price` times `quantity` overflows a number ({price} × {quantity})"),
            ));
        }
        let (id, ts) = id_and_ts(self.id, self.ts, stamp)?;
        Ok(Sale {
            id,
            ts,
            category,
            product_id,
            price,
            quantity: quantity as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::FixedStamp;
    use super::*;

    fn good() -> RawSale {
        RawSale {
            category: RawField::from_code(3),
            product_id: RawField::Given("P".into()),
            price: RawField::Given(2.5),
            quantity: RawField::Given(4),
            ..RawSale::default()
        }
    }

    #[test]
    fn a_typed_sale_meets_the_same_rules() {
        let s = good().validate(&mut FixedStamp(0)).expect("valid");
        assert_eq!(
            (s.id.as_str(), s.category, s.price, s.quantity),
            ("gen-1", Category::Home, 2.5, 4)
        );
        for (bad, field, message) in [
            (
                RawSale {
                    category: RawField::from_code(0),
                    ..good()
                },
                "category",
                "field `category` is required",
            ),
            (
                RawSale {
                    category: RawField::from_code(9),
                    ..good()
                },
                "category",
                "field `category` must be electronics, clothing, home, beauty \
                 (or Electronica, Ropa, Hogar, Belleza, or 1-4), got 9",
            ),
            (
                RawSale {
                    price: RawField::Given(f64::NAN),
                    ..good()
                },
                "price",
                "field `price` must be a finite number, got NaN",
            ),
            (
                RawSale {
                    quantity: RawField::Given(-5),
                    ..good()
                },
                "quantity",
                "field `quantity` must be an integer from 1 to 1000000, got -5",
            ),
            (
                RawSale {
                    product_id: RawField::Given(String::new()),
                    ..good()
                },
                "product_id",
                "field `product_id` must be 1 to 64 characters long, got 0",
            ),
        ] {
            let err = bad.validate(&mut FixedStamp(0)).expect_err(message);
            assert_eq!(
                (err.field.as_deref(), err.message.as_str()),
                (Some(field), message)
            );
        }
        assert_eq!(Category::ALL.map(Category::code), [1, 2, 3, 4]);
    }
}
