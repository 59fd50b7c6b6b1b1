//! Every RPC of the protocol, so checks that must cover all of them need no list kept by hand.

/// Every method of every Hearth service, read from the protocol's own descriptor (so a new RPC
/// is covered without anyone listing it).
pub fn every_rpc() -> Vec<String> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(hearth_common::proto::FILE_DESCRIPTOR_SET)
        .expect("the protocol's descriptor");
    let mut paths = Vec::new();
    for file in set.file {
        let package = file.package.unwrap_or_default();
        for service in file.service {
            for method in service.method {
                paths.push(format!(
                    "/{package}.{}/{}",
                    service.name.as_deref().unwrap_or_default(),
                    method.name.unwrap_or_default()
                ));
            }
        }
    }
    paths
}

/// The RPCs that stream (the server's answer, the client's requests, or both): a call of one
/// may rightly stay open, where a unary call must answer.
pub fn streaming_rpcs() -> std::collections::BTreeSet<String> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(hearth_common::proto::FILE_DESCRIPTOR_SET)
        .expect("the protocol's descriptor");
    let mut paths = std::collections::BTreeSet::new();
    for file in set.file {
        let package = file.package.unwrap_or_default();
        for service in file.service {
            for method in service.method {
                if method.server_streaming() || method.client_streaming() {
                    paths.insert(format!(
                        "/{package}.{}/{}",
                        service.name.as_deref().unwrap_or_default(),
                        method.name.unwrap_or_default()
                    ));
                }
            }
        }
    }
    paths
}
