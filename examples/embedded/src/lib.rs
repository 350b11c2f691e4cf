//! The shop: an application of its own that embeds Understudy. It declares two unit kinds —
//! the [`Inventory`] (stock per item) and the [`Orders`] (the orders taken) — and its binary
//! (`shop`) starts a node with them through `understudy::cluster::node::Node::builder`.
//!
//! | item | what it is |
//! | --- | --- |
//! | [`Inventory`] | stock per item: restock, reserve (never below zero), read |
//! | [`Orders`] | the orders taken, each once |
//! | [`checkout`] | `CheckoutActor`: a ractor actor of the shop's that calls both units |
//! | [`units`], [`register`] | the shop's `units.toml`, and its kinds registered on a node builder |

pub mod checkout;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use understudy::cluster::builder::NodeBuilder;
use understudy::cluster::config::{ClusterConfig, ConfigError};
use understudy::runtime::{Budget, Handled, Unit};

/// The shop's units file, built into its binary.
pub const UNITS_TOML: &str = include_str!("../units.toml");

/// A request to the inventory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InventoryRequest {
    /// Add `qty` of `item` to the stock.
    Restock {
        /// The item.
        item: String,
        /// How many.
        qty: u64,
    },
    /// Take `qty` of `item` from the stock, if there are that many.
    Reserve {
        /// The item.
        item: String,
        /// How many.
        qty: u64,
    },
    /// How many of `item` are in stock.
    Stock {
        /// The item.
        item: String,
    },
}

/// The inventory's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InventoryResponse {
    /// How many are left in stock after the request.
    Left(u64),
    /// Not enough in stock; nothing was taken.
    OutOfStock {
        /// How many there are.
        left: u64,
    },
}

/// Stock per item, replicated from the primary to the standby.
#[derive(Clone, Debug)]
pub struct Inventory {
    /// Every request's budget.
    pub budget: Budget,
}

impl Unit for Inventory {
    type State = BTreeMap<String, u64>;
    type Stimulus = InventoryRequest;
    type Response = InventoryResponse;
    /// An item's new stock.
    type Update = (String, u64);

    fn handle(&self, stock: &Self::State, request: &InventoryRequest) -> Handled<Self> {
        let of = |item: &String| stock.get(item).copied().unwrap_or(0);
        match request {
            InventoryRequest::Restock { item, qty } => {
                let left = of(item).saturating_add(*qty);
                Handled::write(InventoryResponse::Left(left), vec![(item.clone(), left)])
            }
            InventoryRequest::Reserve { item, qty } => match of(item).checked_sub(*qty) {
                Some(left) => {
                    Handled::write(InventoryResponse::Left(left), vec![(item.clone(), left)])
                }
                None => Handled::read(InventoryResponse::OutOfStock { left: of(item) }),
            },
            InventoryRequest::Stock { item } => Handled::read(InventoryResponse::Left(of(item))),
        }
    }

    fn apply(&self, stock: &mut Self::State, (item, left): &(String, u64)) {
        stock.insert(item.clone(), *left);
    }

    fn budget(&self, _request: &InventoryRequest) -> Budget {
        self.budget
    }
}

/// A request to the orders unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrdersRequest {
    /// Record an order (an order id already recorded changes nothing).
    Place {
        /// The order's id.
        id: String,
        /// The item.
        item: String,
        /// How many.
        qty: u64,
    },
    /// How many orders were taken.
    Count,
}

/// The orders unit's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrdersResponse {
    /// The order is recorded (now or before).
    Placed,
    /// The number of orders.
    Count(u64),
}

/// The orders taken, by id.
#[derive(Clone, Debug)]
pub struct Orders {
    /// Every request's budget.
    pub budget: Budget,
}

impl Unit for Orders {
    type State = BTreeMap<String, (String, u64)>;
    type Stimulus = OrdersRequest;
    type Response = OrdersResponse;
    /// An order recorded: id, item, quantity.
    type Update = (String, String, u64);

    fn handle(&self, orders: &Self::State, request: &OrdersRequest) -> Handled<Self> {
        match request {
            OrdersRequest::Place { id, .. } if orders.contains_key(id) => {
                Handled::read(OrdersResponse::Placed)
            }
            OrdersRequest::Place { id, item, qty } => Handled::write(
                OrdersResponse::Placed,
                vec![(id.clone(), item.clone(), *qty)],
            ),
            OrdersRequest::Count => Handled::read(OrdersResponse::Count(orders.len() as u64)),
        }
    }

    fn apply(&self, orders: &mut Self::State, (id, item, qty): &(String, String, u64)) {
        orders.insert(id.clone(), (item.clone(), *qty));
    }

    fn budget(&self, _request: &OrdersRequest) -> Budget {
        self.budget
    }
}

/// The shop's own units file, parsed.
pub fn units() -> Result<ClusterConfig, ConfigError> {
    ClusterConfig::from_toml_str(UNITS_TOML)
}

/// Registers the shop's unit kinds on a node builder, each unit with the budget its entry
/// in the units file gives.
pub fn register(builder: NodeBuilder) -> NodeBuilder {
    builder
        .kind("inventory", |u| Inventory { budget: u.budget() })
        .kind("orders", |u| Orders { budget: u.budget() })
}

/// The default budget of the shop's requests when its units file gives none.
pub const DEFAULT_T_MAX: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_never_takes_the_stock_below_zero() {
        let inv = Inventory {
            budget: Budget::new(DEFAULT_T_MAX),
        };
        let mut stock = BTreeMap::new();
        let restock = inv.handle(
            &stock,
            &InventoryRequest::Restock {
                item: "w".into(),
                qty: 2,
            },
        );
        for u in &restock.updates {
            inv.apply(&mut stock, u);
        }
        let too_many = inv.handle(
            &stock,
            &InventoryRequest::Reserve {
                item: "w".into(),
                qty: 3,
            },
        );
        assert_eq!(too_many.response, InventoryResponse::OutOfStock { left: 2 });
        assert!(too_many.updates.is_empty());
    }

    #[test]
    fn the_built_in_units_file_declares_both_kinds() {
        let config = ClusterConfig::from_toml_str(UNITS_TOML).expect("the shop's units file");
        config
            .validate(&["inventory", "orders"])
            .expect("valid for the shop's kinds");
    }
}
