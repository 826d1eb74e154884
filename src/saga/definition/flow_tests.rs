//! Parsing and validation of the flow constructs: `parallel`, `for_each`, `when`,
//! `input`.
use super::*;

const PARALLEL: &str = concat!(
    head!(),
    "[defaults]\nretry = { max_attempts = 7 }\n",
    step!(),
    r#"
[[steps]]
name = "prepare"
when = "!input.digital"
parallel = [
  { name = "reserve", activity = "inventory.reserve", compensate = "inventory.release" },
  { name = "authorize", activity = "payments.authorize", compensate = "payments.void", retry = { max_attempts = 2 } },
  { name = "approval", wait = "approved", timeout = "1h" },
]

[[steps]]
name = "charge"
activity = "payments.capture"
input = { token = "steps.prepare.authorize.token", order = "input.order_id" }
"#
);

#[test]
fn a_parallel_step_with_when_and_an_input_map_parses() {
    let def = ok(PARALLEL);
    let prepare = &def.steps[1];
    assert_eq!(prepare.when.as_ref().unwrap().to_string(), "!input.digital");
    let StepKind::Parallel(branches) = &prepare.kind else {
        panic!("{prepare:?}")
    };
    let names: Vec<&str> = branches.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, vec!["reserve", "authorize", "approval"]);
    // Branch policies resolve like steps: own value, else [defaults].
    let StepKind::Activity(reserve) = &branches[0].kind else {
        panic!()
    };
    assert_eq!(reserve.retry.max_attempts, 7);
    let StepKind::Activity(authorize) = &branches[1].kind else {
        panic!()
    };
    assert_eq!(authorize.retry.max_attempts, 2);
    let input = def.steps[2].input.as_ref().unwrap();
    assert_eq!(input["token"].to_string(), "steps.prepare.authorize.token");
    assert_eq!(input["order"].to_string(), "input.order_id");
    // Branch activities count: workers and coordinators declare their queues.
    assert!(def.activities().contains("payments.void"));
}

#[test]
fn a_code_built_parallel_definition_validates_like_the_file() {
    let def = ok(PARALLEL);
    assert_eq!(def.validate("<code>"), Ok(()));
    let mut bad = def.clone();
    if let StepKind::Parallel(branches) = &mut bad.steps[1].kind {
        branches[1].name = "reserve".into();
    }
    let err = bad.validate("<code>").unwrap_err();
    assert_eq!(err.field, "steps[1].parallel[1].name");
    assert!(
        err.reason.contains("duplicate step name `reserve`"),
        "{err}"
    );
}

refuses! {
    nested_parallel_is_refused:
        concat!(head!(), "[[steps]]\nname = \"p\"\nparallel = [ { name = \"q\", parallel = [ { name = \"r\", sleep = \"1s\" } ] } ]\n"),
        "steps[0].parallel[0].parallel", "cannot itself be parallel";
    an_empty_parallel_is_refused:
        concat!(head!(), "[[steps]]\nname = \"p\"\nparallel = []\n"),
        "steps[0].parallel", "at least one branch";
    a_branch_named_like_a_step_is_refused:
        concat!(head!(), step!(), "[[steps]]\nname = \"p\"\nparallel = [ { name = \"a\", sleep = \"1s\" } ]\n"),
        "steps[1].parallel[0].name", "duplicate step name `a`";
    a_branch_needs_a_kind:
        concat!(head!(), "[[steps]]\nname = \"p\"\nparallel = [ { name = \"b\" } ]\n"),
        "steps[0].parallel[0]", "exactly one of";
    a_branch_refuses_unknown_keys:
        concat!(head!(), "[[steps]]\nname = \"p\"\nparallel = [ { name = \"b\", sleep = \"1s\", colour = \"red\" } ]\n"),
        "steps[0].parallel[0].colour", "unknown field";
    a_branch_activity_is_checked:
        concat!(head!(), "[[steps]]\nname = \"p\"\nparallel = [ { name = \"b\", activity = \"x\", retry = { max_attempts = 0 } } ]\n"),
        "steps[0].parallel[0].retry.max_attempts", "at least 1";
    a_parallel_step_refuses_activity_keys:
        concat!(head!(), "[[steps]]\nname = \"p\"\nretry = { max_attempts = 2 }\nparallel = [ { name = \"b\", sleep = \"1s\" } ]\n"),
        "steps[0].retry", "only valid on activity steps";
    parallel_with_activity_is_two_kinds:
        concat!(head!(), "[[steps]]\nname = \"p\"\nactivity = \"x\"\nparallel = [ { name = \"b\", sleep = \"1s\" } ]\n"),
        "steps[0]", "it has `activity` and `parallel`";
    when_to_a_later_step_is_refused:
        concat!(head!(), "[[steps]]\nname = \"a\"\nactivity = \"x\"\nwhen = \"steps.b.ok\"\n[[steps]]\nname = \"b\"\nactivity = \"y\"\n"),
        "steps[0].when", "must name an earlier step";
    when_to_a_sibling_branch_is_refused:
        concat!(head!(), "[[steps]]\nname = \"p\"\nparallel = [ { name = \"b\", sleep = \"1s\" }, { name = \"c\", sleep = \"1s\", when = \"steps.b\" } ]\n"),
        "steps[0].parallel[1].when", "must name an earlier step";
    when_must_be_a_path:
        concat!(head!(), "[[steps]]\nname = \"a\"\nactivity = \"x\"\nwhen = \"input..x\"\n"),
        "steps[0].when", "dotted path";
    input_needs_an_activity_step:
        concat!(head!(), "[[steps]]\nname = \"a\"\nsleep = \"1s\"\ninput = { x = \"input.x\" }\n"),
        "steps[0].input", "only valid on activity steps";
    input_paths_are_checked:
        concat!(head!(), "[[steps]]\nname = \"a\"\nactivity = \"x\"\ninput = { x = \"steps.later.x\" }\n"),
        "steps[0].input.x", "must name an earlier step";
    input_values_must_be_paths:
        concat!(head!(), "[[steps]]\nname = \"a\"\nactivity = \"x\"\ninput = { x = \"output.x\" }\n"),
        "steps[0].input.x", "expected a path starting with";
    for_each_needs_an_activity:
        concat!(head!(), "[[steps]]\nname = \"a\"\nsleep = \"1s\"\nfor_each = \"input.x\"\n"),
        "steps[0].for_each", "only valid on activity steps";
    for_each_to_a_later_step_is_refused:
        concat!(head!(), "[[steps]]\nname = \"a\"\nactivity = \"x\"\nfor_each = \"steps.b.list\"\n[[steps]]\nname = \"b\"\nactivity = \"y\"\n"),
        "steps[0].for_each", "must name an earlier step";
    for_each_must_be_a_path:
        concat!(head!(), "[[steps]]\nname = \"a\"\nactivity = \"x\"\nfor_each = \"recipients\"\n"),
        "steps[0].for_each", "expected a path starting with";
    max_concurrency_needs_for_each:
        concat!(head!(), "[[steps]]\nname = \"a\"\nactivity = \"x\"\nmax_concurrency = 5\n"),
        "steps[0].max_concurrency", "needs `for_each`";
    max_concurrency_zero_is_refused:
        concat!(head!(), "[[steps]]\nname = \"a\"\nactivity = \"x\"\nfor_each = \"input.x\"\nmax_concurrency = 0\n"),
        "steps[0].max_concurrency", "between 1 and 1000";
    a_branch_cannot_fan_out:
        concat!(head!(), "[[steps]]\nname = \"p\"\nparallel = [ { name = \"b\", activity = \"x\", for_each = \"input.x\" } ]\n"),
        "steps[0].parallel[0].for_each", "cannot fan out";
    input_key_output_is_reserved:
        concat!(head!(), "[[steps]]\nname = \"a\"\nactivity = \"x\"\ninput = { output = \"input.x\" }\n"),
        "steps[0].input.output", "reserved";
}

#[test]
fn a_for_each_step_parses_with_its_bound_or_the_default() {
    let text = concat!(
        head!(),
        step!(),
        "[[steps]]\nname = \"send_each\"\nfor_each = \"steps.a.recipients\"\nmax_concurrency = 50\nactivity = \"email.send\"\ncompensate = \"email.recall\"\n",
        "[[steps]]\nname = \"other\"\nfor_each = \"input.x\"\nactivity = \"b\"\n",
    );
    let def = ok(text);
    let f = def.steps[1].for_each.as_ref().unwrap();
    assert_eq!(f.items.to_string(), "steps.a.recipients");
    assert_eq!(f.max_concurrency, 50);
    assert!(matches!(def.steps[1].kind, StepKind::Activity(_)));
    let f = def.steps[2].for_each.as_ref().unwrap();
    assert_eq!(f.max_concurrency, DEFAULT_CONCURRENCY);
    assert_eq!(def.validate("<code>"), Ok(()));
    let mut bad = def.clone();
    bad.steps[2].for_each.as_mut().unwrap().max_concurrency = MAX_CONCURRENCY + 1;
    let err = bad.validate("<code>").unwrap_err();
    assert_eq!(err.field, "steps[2].max_concurrency");
}

fn catalog_of(files: &[(&str, &str)]) -> Vec<DefinitionError> {
    let mut cat = Catalog::new();
    for (origin, text) in files {
        cat.insert(ok(text), origin).unwrap();
    }
    cat.check_children()
}

const PARENT: &str = "name = \"parent\"\nversion = 1\n[[steps]]\nname = \"review\"\nsaga = \"child\"\n[[steps]]\nname = \"p\"\nparallel = [ { name = \"screen\", saga = \"child\" } ]\n";

#[test]
fn child_saga_steps_and_branches_name_a_loaded_definition() {
    let child = "name = \"child\"\nversion = 1\n[[steps]]\nname = \"c\"\nactivity = \"x\"\n";
    assert!(catalog_of(&[("parent.toml", PARENT), ("child.toml", child)]).is_empty());
    let def = ok(PARENT);
    assert_eq!(
        def.children().into_iter().collect::<Vec<_>>(),
        vec!["child"]
    );
    let errs = catalog_of(&[("parent.toml", PARENT)]);
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, vec!["steps[0].saga", "steps[1].parallel[0].saga"]);
    assert!(errs[0].reason.contains("no definition `child`"), "{errs:?}");
    assert_eq!(errs[0].file, "parent.toml");
}

#[test]
fn a_definition_that_includes_itself_is_refused() {
    let me = "name = \"loop\"\nversion = 1\n[[steps]]\nname = \"again\"\nsaga = \"loop\"\n";
    let errs = catalog_of(&[("loop.toml", me)]);
    assert!(errs[0].reason.contains("includes itself"), "{errs:?}");
    // Through a child: a -> b -> a.
    let a = "name = \"a\"\nversion = 1\n[[steps]]\nname = \"to_b\"\nsaga = \"b\"\n";
    let b = "name = \"b\"\nversion = 1\n[[steps]]\nname = \"to_a\"\nsaga = \"a\"\n";
    let errs = catalog_of(&[("a.toml", a), ("b.toml", b)]);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].reason.contains("b -> a"), "{errs:?}");
}

refuses! {
    a_saga_step_refuses_activity_keys:
        concat!(head!(), "[[steps]]\nname = \"r\"\nsaga = \"child\"\ncompensate = \"x\"\n"),
        "steps[0].compensate", "only valid on activity steps";
    a_saga_step_names_a_word:
        concat!(head!(), "[[steps]]\nname = \"r\"\nsaga = \"no spaces\"\n"),
        "steps[0].saga", "";
}
