//! The shop's own ractor actor calling two units, in an in-process cluster of three nodes:
//! each order it takes reserves stock and is recorded once, also across the loss of the
//! inventory primary's node; an order beyond the stock reserves nothing and records nothing.

use ractor::{call, Actor};
use std::time::Duration;
use understudy::runtime::{Budget, CopyConfig};
use understudy::{Catalog, ClusterConfig, InProcessCluster, UnitKind};
use understudy_shop::checkout::{Checkout, CheckoutActor, CheckoutClients, CheckoutMsg};
use understudy_shop::{
    Inventory, InventoryRequest, InventoryResponse, Orders, OrdersRequest, OrdersResponse,
    DEFAULT_T_MAX,
};

type Reply = ractor::RpcReplyPort<Result<Checkout, understudy::CallError>>;

fn order(id: usize, qty: u64) -> impl FnOnce(Reply) -> CheckoutMsg {
    move |reply| CheckoutMsg::Order {
        id: format!("order-{id}"),
        item: "widget".into(),
        qty,
        reply,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ractor_actor_calling_two_units_takes_each_order_once_across_a_node_loss() {
    let budget = Budget::new(DEFAULT_T_MAX);
    let (inventory, orders) = (Inventory { budget }, Orders { budget });
    let catalog = Catalog::new()
        .with_unit(
            "inventory",
            UnitKind::new(inventory.clone()),
            CopyConfig::default(),
        )
        .with_unit(
            "orders",
            UnitKind::new(orders.clone()),
            CopyConfig::default(),
        );
    let cluster = InProcessCluster::start(catalog, &["a", "b", "c"], ClusterConfig::default())
        .await
        .expect("the cluster starts");
    let ready = cluster
        .wait_ready(Duration::from_secs(10))
        .await
        .expect("both units serve");
    let victim = ready
        .iter()
        .find(|u| u.unit.0 == "inventory")
        .and_then(|u| u.primary.clone())
        .expect("the inventory's primary")
        .1;
    let via = cluster
        .node_names()
        .into_iter()
        .find(|n| *n != victim)
        .expect("another node");
    let clients = CheckoutClients {
        inventory: cluster
            .client(&via.0, "inventory", inventory)
            .expect("a client"),
        orders: cluster.client(&via.0, "orders", orders).expect("a client"),
    };
    let restock = InventoryRequest::Restock {
        item: "widget".into(),
        qty: 100,
    };
    assert_eq!(
        clients.inventory.call(restock).await,
        Ok(InventoryResponse::Left(100))
    );
    let (checkout, _task) = Actor::spawn(None, CheckoutActor, clients.clone())
        .await
        .expect("the checkout starts");
    let ask = |id, qty| {
        let checkout = checkout.clone();
        async move {
            call!(checkout, order(id, qty))
                .expect("the checkout answers")
                .expect("the order's calls are answered")
        }
    };

    assert_eq!(ask(0, 3).await, Checkout::Taken { left: 97 });
    cluster.kill_node(&victim.0).expect("the node goes");
    for id in 1..=10 {
        assert_eq!(
            ask(id, 3).await,
            Checkout::Taken {
                left: 97 - 3 * id as u64
            }
        );
    }
    assert_eq!(ask(11, 1_000).await, Checkout::OutOfStock { left: 67 });

    let count = clients.orders.call(OrdersRequest::Count).await;
    assert_eq!(count, Ok(OrdersResponse::Count(11)), "each order once");
    let stock = InventoryRequest::Stock {
        item: "widget".into(),
    };
    assert_eq!(
        clients.inventory.call(stock).await,
        Ok(InventoryResponse::Left(67))
    );
    checkout.stop(None);
    cluster.shutdown();
}
