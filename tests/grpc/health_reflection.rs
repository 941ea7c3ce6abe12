//! The standard services: health and reflection.

use super::*;

#[tokio::test]
async fn health_reports_serving() {
    let server = TestServer::start(&[]);
    let mut health = HealthClient::new(channel(&server).await);
    for service in ["", "flujo.v1.Ingest"] {
        let resp = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("Health/Check {service:?}: {e:?}"))
            .into_inner();
        assert_eq!(
            resp.status,
            ServingStatus::Serving as i32,
            "Health/Check {service:?}: {resp:?}"
        );
    }
    // An unknown service is NOT_FOUND, as the health protocol says.
    let status = health
        .check(HealthCheckRequest {
            service: "flujo.v1.Nope".into(),
        })
        .await
        .expect_err("an unknown service");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

/// The next reflection answer, bounded in time.
pub(crate) async fn next_reflection(
    responses: &mut tonic::Streaming<tonic_reflection::pb::v1::ServerReflectionResponse>,
) -> tonic_reflection::pb::v1::server_reflection_response::MessageResponse {
    tokio::time::timeout(CALL_TIMEOUT, responses.next())
        .await
        .expect("a reflection answer in time")
        .expect("a reflection answer")
        .expect("a reflection answer, not an error")
        .message_response
        .expect("a message response")
}

/// Asks reflection for the list of services, asserting it names `symbol`, then for
/// the file holding `symbol`: the stream with the file's answer still to read.
pub(crate) async fn list_and_describe(
    server: &TestServer,
    symbol: &str,
) -> tonic::Streaming<tonic_reflection::pb::v1::ServerReflectionResponse> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let mut reflection = ServerReflectionClient::new(channel(server).await);
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
        },
    ];
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter(requests))
        .await
        .expect("ServerReflectionInfo")
        .into_inner();
    let MessageResponse::ListServicesResponse(list) = next_reflection(&mut responses).await else {
        panic!("ListServices did not answer a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.iter().any(|n| n == symbol),
        "{symbol} is served but reflection lists only {names:?}"
    );
    responses
}

#[tokio::test]
async fn reflection_lists_the_ingest_service() {
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = TestServer::start(&[]);
    let mut responses = list_and_describe(&server, "flujo.v1.Ingest").await;
    let MessageResponse::FileDescriptorResponse(files) = next_reflection(&mut responses).await
    else {
        panic!("FileContainingSymbol did not answer file descriptors");
    };
    let has = |needle: &[u8]| {
        files
            .file_descriptor_proto
            .iter()
            .any(|f| f.windows(needle.len()).any(|w| w == needle))
    };
    for needle in [
        &b"flujo/v1/ingest.proto"[..],
        b"PublishSales",
        b"PublishTweets",
        b"Stream",
    ] {
        assert!(
            has(needle),
            "the descriptor of flujo.v1.Ingest holds {:?}",
            String::from_utf8_lossy(needle)
        );
    }
}

/// The health service is served, so reflection should know it too: tools that
/// resolve methods through reflection (grpcurl, grpcui, Postman) otherwise cannot call
/// `grpc.health.v1.Health/Check`.
#[tokio::test]
async fn reflection_describes_the_health_service() {
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = TestServer::start(&[]);
    let mut responses = list_and_describe(&server, "grpc.health.v1.Health").await;
    let answer = tokio::time::timeout(CALL_TIMEOUT, responses.next())
        .await
        .expect("a reflection answer in time")
        .expect("a reflection answer");
    assert!(
        matches!(
            answer.as_ref().map(|r| &r.message_response),
            Ok(Some(MessageResponse::FileDescriptorResponse(_)))
        ),
        "reflection cannot resolve grpc.health.v1.Health: {answer:?}"
    );
}
