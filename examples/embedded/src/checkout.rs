//! `Checkout`: an ordinary ractor actor of the shop's own that calls two units. It holds a
//! typed `UnitClient` of each; for an order it reserves the stock in the inventory, then
//! records the order in the orders unit, and answers its caller. The clients follow the units'
//! takeovers, so the actor needs no failure handling of its own.

use crate::{Inventory, InventoryRequest, InventoryResponse, Orders, OrdersRequest};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use understudy::{CallError, UnitClient};

/// What the checkout is asked.
#[derive(Debug)]
pub enum CheckoutMsg {
    /// Take order `id` for `qty` of `item`.
    Order {
        /// The order's id (an id taken before is not taken again).
        id: String,
        /// The item.
        item: String,
        /// How many.
        qty: u64,
        /// Where the outcome goes.
        reply: RpcReplyPort<Result<Checkout, CallError>>,
    },
}

// Local to the node: a ractor message that never crosses a node boundary.
impl ractor::Message for CheckoutMsg {}

/// The outcome of an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checkout {
    /// Reserved and recorded; `left` in stock after it.
    Taken {
        /// The stock left.
        left: u64,
    },
    /// Not enough in stock: nothing reserved, nothing recorded.
    OutOfStock {
        /// The stock there is.
        left: u64,
    },
}

/// The checkout actor (its state: a client of each unit).
#[derive(Debug)]
pub struct CheckoutActor;

/// The clients the checkout calls through.
#[derive(Clone, Debug)]
pub struct CheckoutClients {
    /// The inventory.
    pub inventory: UnitClient<Inventory>,
    /// The orders.
    pub orders: UnitClient<Orders>,
}

impl Actor for CheckoutActor {
    type Msg = CheckoutMsg;
    type State = CheckoutClients;
    type Arguments = CheckoutClients;

    async fn pre_start(
        &self,
        _myself: ActorRef<CheckoutMsg>,
        clients: CheckoutClients,
    ) -> Result<CheckoutClients, ActorProcessingErr> {
        Ok(clients)
    }

    async fn handle(
        &self,
        _myself: ActorRef<CheckoutMsg>,
        msg: CheckoutMsg,
        clients: &mut CheckoutClients,
    ) -> Result<(), ActorProcessingErr> {
        let CheckoutMsg::Order {
            id,
            item,
            qty,
            reply,
        } = msg;
        let outcome = take_order(clients, id, item, qty).await;
        // The caller may have given up waiting; that is its business.
        let _ = reply.send(outcome);
        Ok(())
    }
}

async fn take_order(
    clients: &CheckoutClients,
    id: String,
    item: String,
    qty: u64,
) -> Result<Checkout, CallError> {
    let reserve = InventoryRequest::Reserve {
        item: item.clone(),
        qty,
    };
    match clients.inventory.call(reserve).await? {
        InventoryResponse::OutOfStock { left } => Ok(Checkout::OutOfStock { left }),
        InventoryResponse::Left(left) => {
            clients
                .orders
                .call(OrdersRequest::Place { id, item, qty })
                .await?;
            Ok(Checkout::Taken { left })
        }
    }
}
