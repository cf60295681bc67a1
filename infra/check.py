"""Offline checks of infra/template.yaml, run by `make test`.

    python infra/check.py                 check the template; exit 1 on any finding
    python infra/check.py --self-test     also prove that broken copies are caught

Nothing here talks to AWS. Three layers, because each one misses what the next one sees:

1. cfn-lint on the SAM template.
2. The SAM translator, run offline, and cfn-lint on its CloudFormation output. SAM resources
   hide their real properties from cfn-lint: a bad enum value or a dangling GetAtt inside an
   AWS::Serverless::Function only shows after the transform.
3. Invariants of this product, asserted on the parsed template, so that an edit that widens a
   permission or drops a safety condition fails the suite.
4. Settings: every EC2PASS_* variable that shared/src/config.rs reads is set by the template from
   a parameter, and docs/configuration.md describes it and names that parameter.
"""

import copy
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "dev"))
from aws_local import create_table_args, load_template, table_resource  # noqa: E402

TEMPLATE = ROOT / "infra" / "template.yaml"
PSEUDO = {"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws"}
# The translator asks boto for a region; no credentials or network are used.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
CFN_LINT = Path(sys.executable).parent / "cfn-lint"


class NoManagedPolicies:
    """The template names no managed policies, so the translator needs no IAM look-up."""

    def load(self):
        return {}


def cfn_lint(path):
    """cfn-lint findings for a template file, as lines."""
    run = subprocess.run(
        [str(CFN_LINT), "--format", "parseable", str(path)],
        capture_output=True,
        text=True,
    )
    findings = [l for l in run.stdout.splitlines() if l.strip()]
    if run.returncode != 0 and not findings:
        findings = [f"cfn-lint failed: {run.stderr.strip()[:500]}"]
    return findings


def translate(template):
    """The CloudFormation the SAM transform produces, offline."""
    from samtranslator.translator.transform import transform

    packaged = copy.deepcopy(template)
    # `sam package` replaces local code paths with S3 URIs before the transform; do the same.
    for name, resource in packaged.get("Resources", {}).items():
        if resource.get("Type") == "AWS::Serverless::Function":
            resource.setdefault("Properties", {})["CodeUri"] = f"s3://ec2pass-offline-check/{name}.zip"
    return transform(packaged, dict(PSEUDO), NoManagedPolicies())


def statements(resource):
    """Every IAM statement of a serverless function's inline policies (both branches of an If)."""
    found = []

    def walk(policy):
        if isinstance(policy, dict) and "Fn::If" in policy:
            for branch in policy["Fn::If"][1:]:
                walk(branch)
        elif isinstance(policy, dict) and "Statement" in policy:
            found.extend(policy["Statement"])

    for policy in resource["Properties"].get("Policies", []):
        walk(policy)
    return found


def actions(statement):
    a = statement.get("Action", [])
    return [a] if isinstance(a, str) else list(a)


def invariants(template):
    """Product rules the template must keep; a list of violations."""
    problems = []
    res = template.get("Resources", {})
    glob = template.get("Globals", {}).get("Function", {})
    functions = {name: r for name, r in res.items() if r.get("Type") == "AWS::Serverless::Function"}
    if set(functions) != {"IssuerFunction", "GuardFunction"}:
        problems.append(f"expected IssuerFunction and GuardFunction, found {sorted(functions)}")
    for name, fn in functions.items():
        props = fn.get("Properties", {})
        if props.get("Runtime", glob.get("Runtime")) != "provided.al2023":
            problems.append(f"{name}: runtime is not provided.al2023")
        if props.get("Architectures", glob.get("Architectures")) != ["arm64"]:
            problems.append(f"{name}: architecture is not arm64")
        if fn.get("Metadata", {}).get("BuildMethod") != "rust-cargolambda":
            problems.append(f"{name}: BuildMethod is not rust-cargolambda")
        for st in statements(fn):
            for action in actions(st):
                if action == "*" or action.endswith(":*") or "*" in action.split(":", 1)[-1]:
                    problems.append(f"{name}: wildcard action {action}")
            if st.get("Effect") != "Allow":
                problems.append(f"{name}: unexpected Effect {st.get('Effect')}")
    issuer, guard = functions.get("IssuerFunction"), functions.get("GuardFunction")
    if issuer:
        url = issuer["Properties"].get("FunctionUrlConfig", {})
        if url.get("AuthType") != "NONE":
            problems.append("IssuerFunction: the function URL must be AuthType NONE (Slack cannot sign with SigV4)")
        granted = {a for st in statements(issuer) for a in actions(st)}
        for forbidden in ("ec2:StopInstances", "ec2:DeleteTags", "ec2:TerminateInstances", "ec2:CreateTags",
                          "ec2:ModifyInstanceAttribute", "sns:Publish"):
            if forbidden in granted:
                problems.append(f"IssuerFunction: must not be allowed {forbidden}")
    if guard:
        deletes = [st for st in statements(guard) if "ec2:DeleteTags" in actions(st)]
        if len(deletes) != 1:
            problems.append("GuardFunction: expected exactly one statement allowing ec2:DeleteTags")
        for st in deletes:
            cond = st.get("Condition", {})
            keys = cond.get("ForAllValues:StringEquals", {}).get("aws:TagKeys")
            if keys not in (["Auth"], "Auth"):
                problems.append("GuardFunction: DeleteTags must be limited with ForAllValues:StringEquals aws:TagKeys [Auth]")
            if str(cond.get("Null", {}).get("aws:TagKeys")).lower() != "false":
                problems.append("GuardFunction: DeleteTags needs a Null aws:TagKeys false condition (a DeleteTags without tags deletes every tag)")
            if "ForAnyValue:StringEquals" in cond:
                problems.append("GuardFunction: ForAnyValue lets other keys through with Auth")
        env = guard["Properties"].get("Environment", {}).get("Variables", {})
        if env.get("EC2PASS_AUTH_TAG", "Auth") != "Auth":
            problems.append("GuardFunction: EC2PASS_AUTH_TAG differs from the tag key the IAM condition allows")
        rule = guard["Properties"].get("Events", {}).get("StateChange", {})
        pattern = rule.get("Properties", {}).get("Pattern", {})
        if rule.get("Type") != "EventBridgeRule" or sorted(pattern.get("detail", {}).get("state", [])) != ["pending", "running"]:
            problems.append("GuardFunction: needs an EventBridge rule for pending and running")
        on_failure = guard["Properties"].get("EventInvokeConfig", {}).get("DestinationConfig", {}).get("OnFailure", {})
        if on_failure.get("Type") != "SQS":
            problems.append("GuardFunction: needs an SQS on-failure destination")
    secret = template.get("Parameters", {}).get("SlackSigningSecret", {})
    if secret and str(secret.get("NoEcho")).lower() != "true":
        problems.append("SlackSigningSecret must be NoEcho")
    table = table_resource(template)
    if table.get("BillingMode") != "PAY_PER_REQUEST":
        problems.append("Table: not on-demand")
    if not table.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled"):
        problems.append("Table: point-in-time recovery is off")
    if table.get("TimeToLiveSpecification", {}).get("AttributeName") != "ttl":
        problems.append("Table: TTL must be on the ttl attribute")
    if not table.get("SSESpecification", {}).get("SSEEnabled"):
        problems.append("Table: encryption is not set")
    topic = res.get("AlertTopic", {}).get("Properties", {})
    key_id = topic.get("KmsMasterKeyId")
    if not key_id:
        problems.append("AlertTopic: not encrypted")
    elif key_id != {"Ref": "AlertKey"}:
        problems.append("AlertTopic: must use the stack's AlertKey (CloudWatch alarms cannot publish to a topic under alias/aws/sns)")
    key_policy = res.get("AlertKey", {}).get("Properties", {}).get("KeyPolicy", {})
    if not any(st.get("Principal", {}).get("Service") == "cloudwatch.amazonaws.com"
               and "kms:GenerateDataKey" in actions(st) for st in key_policy.get("Statement", [])):
        problems.append("AlertKey: the key policy must let cloudwatch.amazonaws.com publish (kms:GenerateDataKey, kms:Decrypt)")
    if guard and not any("kms:GenerateDataKey" in actions(st) and st.get("Resource") == {"Fn::GetAtt": ["AlertKey", "Arn"]}
                         for st in statements(guard)):
        problems.append("GuardFunction: needs kms:GenerateDataKey on AlertKey to publish to the encrypted topic")
    outputs = template.get("Outputs", {})
    for out in ("SlackRequestUrl", "AlertTopicArn"):
        if out not in outputs:
            problems.append(f"missing output {out}")
    return problems


POLICIES = ROOT / "infra" / "policies"


def policy_invariants(template, tag_policy, scp):
    """The example policies keep the Auth tag and the guard out of ordinary hands."""
    problems = []
    role_path = template.get("Globals", {}).get("Function", {}).get("RolePath")
    exempt = f"arn:aws:iam::*:role{role_path}*" if role_path else None
    deletes_every_tag = False
    for st in tag_policy.get("Statement", []):
        cond = st.get("Condition", {})
        if st.get("Effect") != "Deny":
            problems.append(f"protect-auth-tag {st.get('Sid')}: must be a Deny")
        if "ForAllValues:StringEquals" in cond:
            problems.append(f"protect-auth-tag {st.get('Sid')}: a Deny on aws:TagKeys needs ForAnyValue (ForAllValues misses Auth sent with other keys, and matches no keys at all)")
        if exempt and cond.get("ArnNotLike", {}).get("aws:PrincipalArn") != exempt:
            problems.append(f"protect-auth-tag {st.get('Sid')}: must exempt exactly the ec2pass roles ({exempt})")
        if st.get("Action") == "ec2:DeleteTags" and cond.get("Null", {}).get("aws:TagKeys") == "true":
            deletes_every_tag = True
    if not deletes_every_tag:
        problems.append("protect-auth-tag: DeleteTags without tags (which deletes every tag, Auth included) is not denied")
    denied = {a for st in scp.get("Statement", []) if st.get("Effect") == "Deny" for a in st.get("Action", [])}
    params = template.get("Parameters", {})
    for key in (params.get("ExemptTag", {}).get("Default"), params.get("GuardTag", {}).get("Default")):
        for action in ("ec2:CreateTags", "ec2:DeleteTags"):
            if not any(st.get("Effect") == "Deny" and action in st.get("Action", [])
                       and key in st.get("Condition", {}).get("ForAnyValue:StringEquals", {}).get("aws:TagKeys", [])
                       for st in scp.get("Statement", [])):
                problems.append(f"protect-guard-scp: {action} of the {key} tag is not denied (it would switch the guard off for an instance)")
    for name, policy in (("protect-auth-tag", tag_policy), ("protect-guard-scp", scp)):
        if len(json.dumps(policy, separators=(",", ":"))) > 5120:
            problems.append(f"{name}: longer than the 5,120 characters AWS Organizations allows in a policy")
    for needed in ("lambda:DeleteFunction", "lambda:PutFunctionConcurrency", "lambda:UpdateFunctionCode",
                   "events:DisableRule", "events:DeleteRule", "events:RemoveTargets",
                   "iam:DeleteRole", "iam:PutRolePolicy", "dynamodb:DeleteTable", "sns:DeleteTopic",
                   "kms:ScheduleKeyDeletion", "kms:DisableKey", "ssm:GetParameter", "ssm:PutParameter"):
        if needed not in denied:
            problems.append(f"protect-guard-scp: {needed} is not denied")
    return problems


def local_table_matches(template):
    """The local setup's create_table call is built from this very resource."""
    props = table_resource(template)
    args = create_table_args(props, "ec2pass-local")
    same = (
        args["KeySchema"] == props["KeySchema"]
        and args["AttributeDefinitions"] == props["AttributeDefinitions"]
        and args.get("GlobalSecondaryIndexes") == props.get("GlobalSecondaryIndexes")
    )
    return [] if same else ["the local table definition differs from the template's"]


CONFIG_RS = ROOT / "shared" / "src" / "config.rs"
CONFIG_DOC = ROOT / "docs" / "configuration.md"
# Variables the template sets from a resource or a constant rather than from a parameter.
NOT_PARAMETERS = {
    "EC2PASS_TABLE": "the stack's own table",
    "EC2PASS_ALERT_TOPIC_ARN": "the stack's own topic",
    "EC2PASS_AUTH_TAG": "fixed: the guard's DeleteTags condition and protect-auth-tag.json name this key",
}


def settings_read(function):
    """The EC2PASS_* variables that `impl IssuerConfig` or `impl GuardConfig` reads, from the source."""
    source = CONFIG_RS.read_text()

    def block(opening):
        start = source.index(opening)
        return source[start:source.find("\n}\n", start)]

    body = block(f"impl {function} {{")
    # Module-level readers such as `table_name(env)` count for the impl that calls them.
    for helper in re.findall(r"^(?:pub )?fn (\w+)\(env: &Env", source, re.M):
        if f"{helper}(env" in body:
            body += block(f"fn {helper}(")
    return set(re.findall(r'"(EC2PASS_[A-Z_]+)"', body))


def settings_match(template):
    """Every setting a function reads is in its template environment, backed by a parameter, and documented."""
    problems = []
    res = template.get("Resources", {})
    documented = CONFIG_DOC.read_text()
    for name, config in (("IssuerFunction", "IssuerConfig"), ("GuardFunction", "GuardConfig")):
        env = res.get(name, {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
        read = settings_read(config)
        for var in sorted(read - set(env)):
            problems.append(f"{name}: the template does not set {var}, which {config} reads")
        for var in sorted(set(env) - read):
            problems.append(f"{name}: the template sets {var}, which {config} never reads")
        for var, value in sorted(env.items()):
            rows = [l for l in documented.splitlines() if l.startswith(f"| `{var}` |")]
            if not rows:
                problems.append(f"docs/configuration.md does not describe {var}")
            if var in NOT_PARAMETERS:
                continue
            params = parameters_behind(value, template.get("Parameters", {}))
            if not params:
                problems.append(f"{name}: {var} is not taken from a parameter")
            for param in params:
                if rows and not any(f"`{param}`" in row for row in rows):
                    problems.append(f"docs/configuration.md: the row for {var} does not name its parameter {param}")
    for param in template.get("Parameters", {}):
        if f"`{param}`" not in documented:
            problems.append(f"docs/configuration.md does not describe the parameter {param}")
    return problems


def parameters_behind(value, parameters):
    """The template parameters a value refers to, through Ref, Sub or If."""
    text = json.dumps(value)
    named = set(re.findall(r'"Ref": "([A-Za-z0-9]+)"', text)) | set(re.findall(r"\$\{([A-Za-z0-9]+)\}", text))
    return sorted(named & set(parameters))


def load_policies():
    return (
        json.loads((POLICIES / "protect-auth-tag.json").read_text()),
        json.loads((POLICIES / "protect-guard-scp.json").read_text()),
    )


def check(template, path=None, policies=None):
    """All findings for a template (parsed), linting the file at `path` or a temporary copy."""
    findings = []
    tag_policy, scp = policies or load_policies()
    findings += policy_invariants(template, tag_policy, scp)
    with tempfile.TemporaryDirectory() as tmp:
        if path is None:
            path = Path(tmp) / "template.json"
            path.write_text(json.dumps(template))
        findings += [f"cfn-lint: {f}" for f in cfn_lint(path)]
        try:
            translated = translate(template)
            out = Path(tmp) / "translated.json"
            out.write_text(json.dumps(translated))
            findings += [f"cfn-lint after SAM transform: {f}" for f in cfn_lint(out)]
        except Exception as e:  # the translator raises on invalid SAM
            findings.append(f"SAM transform: {e}")
    findings += invariants(template)
    findings += local_table_matches(template)
    findings += settings_match(template)
    return findings


def broken_copies(template):
    """Deliberately broken copies, each of which the checks must catch."""

    def guard_statements(t):
        return statements(t["Resources"]["GuardFunction"])

    def widen(t):
        guard_statements(t)[1]["Action"] = ["ec2:*"]

    def drop_null(t):
        for st in guard_statements(t):
            st.get("Condition", {}).pop("Null", None)

    def any_value(t):
        for st in guard_statements(t):
            cond = st.get("Condition", {})
            if "ForAllValues:StringEquals" in cond:
                cond["ForAnyValue:StringEquals"] = cond.pop("ForAllValues:StringEquals")

    def misspell_arch(t):
        t["Globals"]["Function"]["Architectures"] = ["arm46"]

    def dangling_getatt(t):
        guard_statements(t)[0]["Resource"] = {"Fn::GetAtt": ["Tabel", "Arn"]}

    def bad_enum(t):
        t["Resources"]["Table"]["Properties"]["BillingMode"] = "ON_DEMAND"

    def issuer_may_stop(t):
        statements(t["Resources"]["IssuerFunction"])[2]["Action"].append("ec2:StopInstances")

    def url_with_iam(t):
        t["Resources"]["IssuerFunction"]["Properties"]["FunctionUrlConfig"]["AuthType"] = "AWS_IAM"

    def managed_topic_key(t):
        t["Resources"]["AlertTopic"]["Properties"]["KmsMasterKeyId"] = "alias/aws/sns"

    def forget_a_setting(t):
        t["Resources"]["GuardFunction"]["Properties"]["Environment"]["Variables"].pop("EC2PASS_FAIL_MODE")

    for breaker in (widen, drop_null, any_value, misspell_arch, dangling_getatt, bad_enum, issuer_may_stop, url_with_iam,
                    managed_topic_key, forget_a_setting):
        broken = copy.deepcopy(template)
        breaker(broken)
        yield breaker.__name__, broken, None


def broken_policies():
    """Deliberately broken example policies, each of which the checks must catch."""
    tag_policy, scp = load_policies()

    def all_values_in_deny(tag, _):
        cond = tag["Statement"][1]["Condition"]
        cond["ForAllValues:StringEquals"] = cond.pop("ForAnyValue:StringEquals")

    def forget_delete_all(tag, _):
        tag["Statement"] = [st for st in tag["Statement"] if "Null" not in st["Condition"] or st["Action"] != "ec2:DeleteTags"]

    def scp_allows_concurrency_zero(_, scp):
        scp["Statement"][0]["Action"].remove("lambda:PutFunctionConcurrency")

    def scp_forgets_the_exempt_tag(_, scp):
        scp["Statement"] = [st for st in scp["Statement"] if st.get("Sid") != "KeepTheExemptionTags"]

    for breaker in (all_values_in_deny, forget_delete_all, scp_allows_concurrency_zero, scp_forgets_the_exempt_tag):
        tag, s = copy.deepcopy(tag_policy), copy.deepcopy(scp)
        breaker(tag, s)
        yield breaker.__name__, (tag, s)


def quiet_translator_logs():
    """The translator's metrics publisher complains on stderr when nothing publishes them."""
    import logging

    logging.getLogger("samtranslator").setLevel(logging.CRITICAL)


def main(argv):
    quiet_translator_logs()
    template = load_template(TEMPLATE)
    passed = failed = 0
    findings = check(template, TEMPLATE)
    for f in findings:
        print(f"  {f}")
    if findings:
        failed += 1
        print("FAIL infra/template.yaml")
    else:
        passed += 1
        print("ok   infra/template.yaml and infra/policies: cfn-lint, SAM transform + cfn-lint, invariants, local table, settings")
    if "--self-test" in argv:
        baseline = set(findings)
        cases = [(n, t, None) for n, t, _ in broken_copies(template)]
        cases += [(n, template, p) for n, p in broken_policies()]
        for name, broken, policies in cases:
            # Caught means a finding the intact template does not have.
            caught = [f for f in check(broken, policies=policies) if f not in baseline]
            if caught:
                passed += 1
                print(f"ok   broken copy '{name}' is caught: {caught[0]}")
            else:
                failed += 1
                print(f"FAIL broken copy '{name}' passes the checks")
    print(f"template-checks: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
