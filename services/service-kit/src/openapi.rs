//! What every service's OpenAPI document says the same way: the problem+json shape of errors,
//! the answers the shared extractors and layers give before a handler runs, and how the
//! gateway's verified identity reaches a service.
//!
//! Handlers document their own outcomes; [`StandardResponses`] adds the ones service-kit
//! produces on their behalf (a malformed, oversized or mistyped body; a missing identity),
//! so that a document tells the truth without every handler repeating them.

use utoipa::{
    openapi::{
        path::{Operation, ParameterIn},
        security::{ApiKey, ApiKeyValue, SecurityScheme},
        ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder,
    },
    Modify, PartialSchema, ToSchema,
};

use crate::problem::CONTENT_TYPE;

/// The name under which the gateway's signed identity is declared as a security scheme.
pub const GATEWAY_IDENTITY: &str = "gateway_identity";

/// An RFC 9457 problem details document, as every error of every service is sent.
#[derive(ToSchema)]
#[schema(as = Problem)]
#[allow(dead_code)] // Describes the wire format; `problem::Problem` writes it.
pub struct ProblemSchema {
    /// Stable identifier of the kind of problem: `urn:gravity:problem:<slug>`.
    #[schema(example = "urn:gravity:problem:validation")]
    r#type: String,
    /// Short summary of the kind of problem.
    title: String,
    /// The HTTP status code.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// What went wrong this time, and what to do about it.
    detail: Option<String>,
    /// For validation problems: every field that failed, at once.
    errors: Option<Vec<FieldErrorSchema>>,
}

/// One field that failed validation.
#[derive(ToSchema)]
#[schema(as = FieldError)]
#[allow(dead_code)] // Describes the wire format.
pub struct FieldErrorSchema {
    field: String,
    message: String,
}

/// Adds, to every operation of a document, the problem responses that service-kit gives for
/// it, unless the operation documents them itself:
/// - an operation with a request body: 400 (malformed), 413 (too large), 415 (wrong content
///   type) and 422 (well-formed but invalid), from [`crate::extract`] and the body limit;
/// - an operation with query parameters: 400 (the query does not parse), and with path
///   parameters: 404 (a segment that does not parse names nothing), from [`crate::extract`];
/// - an operation with a security requirement: 401;
///
/// and gives every problem response without a schema the `Problem` schema.
pub struct StandardResponses;

impl Modify for StandardResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let (name, schema) = (ProblemSchema::name(), ProblemSchema::schema());
        components.schemas.insert(name.into_owned(), schema);
        let (name, schema) = (FieldErrorSchema::name(), FieldErrorSchema::schema());
        components.schemas.insert(name.into_owned(), schema);
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.options,
                &mut item.head,
                &mut item.trace,
            ]
            .into_iter()
            .flatten()
            {
                complete(operation);
            }
        }
    }
}

fn complete(operation: &mut Operation) {
    let mut add = |status: &str, description: &str| {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(ResponseBuilder::new().description(description).build()));
    };
    if operation.request_body.is_some() {
        add("400", "The body is not well-formed");
        add("413", "The body is larger than this service accepts");
        add(
            "415",
            "The body's Content-Type is not one this operation reads",
        );
        add("422", "The body is well-formed but invalid");
    }
    let parameters = operation.parameters.as_deref().unwrap_or_default();
    if parameters
        .iter()
        .any(|p| matches!(p.parameter_in, ParameterIn::Query))
    {
        add("400", "The query string does not parse");
    }
    if parameters
        .iter()
        .any(|p| matches!(p.parameter_in, ParameterIn::Path))
    {
        add("404", "Nothing at this path");
    }
    if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
        add(
            "401",
            "No verified caller: missing, expired or forged credentials",
        );
    }
    for (status, response) in operation.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let is_error = status.starts_with('4') || status.starts_with('5');
        let bare = response.content.is_empty();
        match response.content.get_mut(CONTENT_TYPE) {
            Some(content) if content.schema.is_none() => {
                content.schema = Some(RefOr::Ref(Ref::from_schema_name("Problem")));
            }
            None if is_error && bare => {
                response.content.insert(
                    CONTENT_TYPE.to_owned(),
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                );
            }
            _ => {}
        }
    }
}

/// Declares the identity the gateway passes on (`X-Identity-Assertion`, a token it signs
/// after verifying the caller's access token, beside `X-User-Id`, `X-User-Roles` and
/// `X-Session-Id`) as the security scheme [`GATEWAY_IDENTITY`]; operations that need a
/// caller name it in `security(...)`.
pub struct GatewayIdentity;

impl Modify for GatewayIdentity {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            GATEWAY_IDENTITY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                crate::identity::ASSERTION.as_str(),
                "Set by the gateway for a caller whose access token it verified; a service \
                 refuses a request without it, or with one the gateway did not sign.",
            ))),
        );
    }
}

#[cfg(test)]
mod tests {
    use utoipa::openapi::{
        path::{HttpMethod, OperationBuilder, PathItem},
        request_body::RequestBodyBuilder,
        security::SecurityRequirement,
        OpenApiBuilder, PathsBuilder, ResponseBuilder,
    };

    use super::*;

    fn document() -> OpenApi {
        let with_body = OperationBuilder::new()
            .request_body(Some(RequestBodyBuilder::new().build()))
            .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
            .response(
                "422",
                ResponseBuilder::new()
                    .description("own words")
                    .content(CONTENT_TYPE, ContentBuilder::new().build()),
            )
            .response("201", ResponseBuilder::new().description("created"))
            .build();
        let plain = OperationBuilder::new()
            .response("200", ResponseBuilder::new().description("ok"))
            .build();
        OpenApiBuilder::new()
            .paths(
                PathsBuilder::new()
                    .path("/a", PathItem::new(HttpMethod::Post, with_body))
                    .path("/b", PathItem::new(HttpMethod::Get, plain)),
            )
            .build()
    }

    #[test]
    fn documents_what_the_kit_answers_and_keeps_what_handlers_said() {
        let mut doc = document();
        StandardResponses.modify(&mut doc);
        let json = serde_json::to_value(&doc).unwrap_or_default();
        let post = &json["paths"]["/a"]["post"]["responses"];
        for status in ["400", "401", "413", "415", "422", "201"] {
            assert!(post.get(status).is_some(), "{status} in {post}");
        }
        assert_eq!(post["422"]["description"], "own words");
        assert_eq!(
            post["415"]["content"][CONTENT_TYPE]["schema"]["$ref"],
            "#/components/schemas/Problem"
        );
        assert_eq!(
            post["422"]["content"][CONTENT_TYPE]["schema"]["$ref"],
            "#/components/schemas/Problem"
        );
        assert!(post["201"].get("content").is_none(), "{post}");
        let get = &json["paths"]["/b"]["get"]["responses"];
        assert_eq!(get.as_object().map(|o| o.len()), Some(1), "{get}");
        assert!(json["components"]["schemas"]["Problem"].is_object());
    }
}
