//! `survives_a_valkey_restart`: a `valkey-server` of the test's own, killed and
//! started again, loses nothing.

use super::*;

#[tokio::test]
async fn survives_a_valkey_restart() {
    let mut server = OwnValkey::start();
    let store = ValkeyStore::connect(&server.url(), "flujo:", DAY, 2).expect("connect");
    let first = vec![
        sale("1", Category::Electronics, "TV", 499.99, 2),
        sale("2", Category::Electronics, "PHONE", 0.1 + 0.2, 1),
    ];
    let tweets = vec![tweet("1", "Mixco", Weather::Cloudy, 21.5, 60.0)];
    store.apply_sales(&first).await.expect("apply before kill");
    store
        .apply_tweets(&tweets)
        .await
        .expect("apply before kill");
    let before = answers(&store).await;

    server.kill9();
    let second = vec![sale("3", Category::Home, "SOFA", 300.0, 1)];
    let bounded = Duration::from_secs(15);
    let down = tokio::time::timeout(bounded, store.apply_sales(&second))
        .await
        .expect("apply must fail fast while Valkey is down, not hang");
    assert!(down.is_err(), "apply succeeded with Valkey down: {down:?}");
    let ping = tokio::time::timeout(bounded, store.ready())
        .await
        .expect("ping must not hang");
    assert!(ping.is_err());
    let query = tokio::time::timeout(bounded, store.sales_kpis())
        .await
        .expect("queries must not hang");
    assert!(query.is_err());

    server.spawn();
    // The same store instance reconnects by itself, and AOF kept everything.
    assert_eq!(answers(&store).await, before, "data survived the restart");
    let applied = store
        .apply_sales(&second)
        .await
        .expect("apply after restart");
    assert_eq!(applied.fresh, vec![true]);
    let again = store
        .apply_sales(&first)
        .await
        .expect("resend after restart");
    assert_eq!(
        again.fresh,
        vec![false, false],
        "dedup markers survived too"
    );
    let kpis = store.sales_kpis().await.expect("kpis");
    assert_eq!(kpis.total.count, 3);
    assert_eq!(
        kpis.categories["home"].monitored_product.as_deref(),
        Some("SOFA")
    );
    store.ready().await.expect("ping after restart");
}
