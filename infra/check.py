"""Offline checks of infra/template.yaml and infra/policies/, run by `make test`.

    python infra/check.py                 check the template and the policies; exit 1 on any finding
    python infra/check.py --self-test     also prove that broken copies are caught

Nothing here talks to AWS. Layers, because each one misses what the next one sees:

1. cfn-lint on the SAM template.
2. The SAM translator, run offline, and cfn-lint on its CloudFormation output. SAM resources
   hide their real properties from cfn-lint: a bad enum value or a dangling GetAtt inside an
   AWS::Serverless::Function only shows after the transform.
3. Invariants of this product, asserted on the parsed template, so that an edit that widens a
   permission or drops a safety condition fails the suite.
4. Settings: every EC2PASS_* variable that shared/src/config.rs reads is set by the template from
   a parameter, and docs/configuration.md describes it and names that parameter.
5. The example policies (infra/policies/*.json): their shape (Deny only, exact carve-outs, the
   5,120-character limit of AWS Organizations); and parliament (a maintained IAM policy linter),
   on them and on the stack's own policies, finds no unknown action and no condition key that
   AWS never sets for an action.
6. Policy claims ("only the issuer's role can read the secret", "only the admin can mute the
   alerts", ...), each evaluated by Principal Mapper's local IAM simulator (PyPI principalmapper,
   NCC Group) over the SCPs, the key policies, the secret's resource policy and the roles'
   policies as the template resolves them, against stand-in principals (docs/policies.md).
"""

import collections
import collections.abc
import copy
import fnmatch
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "dev"))
from aws_local import create_table_args, load_template, table_resource  # noqa: E402

TEMPLATE = ROOT / "infra" / "template.yaml"
POLICIES = ROOT / "infra" / "policies"
STACK = "ec2pass"
ACCOUNT = "123456789012"
REGION = "us-east-1"
PSEUDO = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"}
# The translator asks boto for a region; no credentials or network are used.
os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
CFN_LINT = Path(sys.executable).parent / "cfn-lint"


class NoManagedPolicies:
    """The template names no managed policies in SAM resources, so the translator needs no IAM look-up."""

    def load(self):
        return {}


_LINTED = {}


def cfn_lint_many(paths):
    """cfn-lint findings for several template files in one run, as {path: [lines]}."""
    run = subprocess.run(
        [str(CFN_LINT), "--format", "parseable", *map(str, paths)],
        capture_output=True,
        text=True,
    )
    found = {str(p): [] for p in paths}
    for line in run.stdout.splitlines():
        for p in found:
            if line.startswith(p + ":"):
                found[p].append(line)
                break
    if run.returncode != 0 and not any(found.values()):
        found[str(paths[0])] = [f"cfn-lint failed: {run.stderr.strip()[:500]}"]
    return found


def translate(template):
    """The CloudFormation the SAM transform produces, offline."""
    from samtranslator.translator.transform import transform

    packaged = copy.deepcopy(template)
    # `sam package` replaces local code paths with S3 URIs before the transform; do the same.
    for name, resource in packaged.get("Resources", {}).items():
        if resource.get("Type") == "AWS::Serverless::Function":
            resource.setdefault("Properties", {})["CodeUri"] = f"s3://ec2pass-offline-check/{name}.zip"
    return transform(packaged, dict(PSEUDO), NoManagedPolicies())


def lint_and_translate(template, path=None):
    """cfn-lint on the template and on its SAM transform; cached, since most broken copies
    change only the policies."""
    key = json.dumps(template, sort_keys=True)
    if key in _LINTED:
        return _LINTED[key]
    findings = []
    with tempfile.TemporaryDirectory() as tmp:
        if path is None:
            path = Path(tmp) / "template.json"
            path.write_text(json.dumps(template))
        paths = [path]
        try:
            out = Path(tmp) / "translated.json"
            out.write_text(json.dumps(translate(template)))
            paths.append(out)
        except Exception as e:  # the translator raises on invalid SAM
            findings.append(f"SAM transform: {e}")
        linted = cfn_lint_many(paths)
        findings += [f"cfn-lint: {f}" for f in linted[str(path)]]
        if len(paths) > 1:
            findings += [f"cfn-lint after SAM transform: {f}" for f in linted[str(paths[1])]]
    _LINTED[key] = findings
    return findings


# ---------------------------------------------------------------------------------------------
# The template, resolved: intrinsic functions evaluated with the parameters' defaults, as
# CloudFormation would in an account 123456789012, region us-east-1, stack "ec2pass". Physical
# names CloudFormation generates are written <stack>-<LogicalId>-EXAMPLE.
# ---------------------------------------------------------------------------------------------

NAME_PROPERTY = {
    "AWS::IAM::Role": "RoleName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::CloudWatch::Alarm": "AlarmName",
    "AWS::SecretsManager::Secret": "Name",
    "AWS::KMS::Alias": "AliasName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::Serverless::Function": "FunctionName",
}


class Resolver:
    def __init__(self, template, parameters=None, stack=STACK):
        self.t = template
        self.stack = stack
        self.res = template.get("Resources", {})
        self.params = {k: str(v.get("Default", "")) for k, v in template.get("Parameters", {}).items()}
        self.params.update(parameters or {})

    def condition(self, name):
        return bool(self.value(self.t.get("Conditions", {})[name]))

    def name(self, logical):
        r = self.res.get(logical, {})
        prop = NAME_PROPERTY.get(r.get("Type"))
        given = r.get("Properties", {}).get(prop) if prop else None
        return self.value(given) if given is not None else f"{self.stack}-{logical}-EXAMPLE"

    def key_id(self, logical):
        digits = "".join(f"{ord(c):02x}" for c in logical)[:12].ljust(12, "0")
        return f"0000abcd-00ab-00cd-00ef-{digits}"

    def ref(self, name):
        if name in PSEUDO:
            return PSEUDO[name]
        if name == "AWS::StackName":
            return self.stack
        if name == "AWS::NoValue":
            return None
        if name in self.params:
            return self.params[name]
        kind = self.res.get(name, {}).get("Type")
        if kind == "AWS::SecretsManager::Secret":
            return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{self.name(name)}-AbCdEf"
        if kind == "AWS::KMS::Key":
            return self.key_id(name)
        if kind == "AWS::SNS::Topic":
            return f"arn:aws:sns:{REGION}:{ACCOUNT}:{self.name(name)}"
        if kind == "AWS::SQS::Queue":
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{self.name(name)}"
        return self.name(name)

    def getatt(self, logical, attr):
        kind = self.res.get(logical, {}).get("Type")
        name = self.name(logical)
        if attr == "Arn":
            if kind == "AWS::IAM::Role":
                path = self.value(self.res[logical]["Properties"].get("Path", "/"))
                return f"arn:aws:iam::{ACCOUNT}:role{path}{name}"
            if kind == "AWS::SQS::Queue":
                return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
            if kind == "AWS::DynamoDB::Table":
                return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
            if kind == "AWS::KMS::Key":
                return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{self.key_id(logical)}"
            if kind == "AWS::Serverless::Function":
                return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
            if kind == "AWS::Events::Rule":
                return f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{name}"
            return f"arn:aws:{(kind or 'x::').split('::')[1].lower()}:{REGION}:{ACCOUNT}:{name}"
        if attr == "QueueName":
            return name
        if attr == "FunctionUrl":
            return f"https://example.lambda-url.{REGION}.on.aws/"
        return f"{name}.{attr}"

    def sub(self, text, extra=None):
        def one(m):
            token = m.group(1)
            if extra and token in extra:
                return str(self.value(extra[token]))
            if "." in token and not token.startswith("AWS::"):
                logical, attr = token.split(".", 1)
                return self.getatt(logical, attr)
            return str(self.ref(token))

        return re.sub(r"\$\{([^}!]+)\}", one, text)

    def value(self, v):
        if isinstance(v, list):
            return [x for x in (self.value(i) for i in v) if x is not None]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (k, a), = v.items()
            if k == "Ref":
                return self.ref(a)
            if k == "Fn::GetAtt":
                logical, attr = a if isinstance(a, list) else a.split(".", 1)
                return self.getatt(logical, attr)
            if k == "Fn::Sub":
                return self.sub(a) if isinstance(a, str) else self.sub(a[0], a[1])
            if k == "Fn::If":
                return self.value(a[1] if self.condition(a[0]) else a[2])
            if k == "Fn::Join":
                return a[0].join(str(x) for x in self.value(a[1]))
            if k == "Fn::Equals":
                return str(self.value(a[0])) == str(self.value(a[1]))
            if k == "Fn::Not":
                return not self.value(a[0])
            if k == "Fn::Or":
                return any(self.value(x) for x in a)
            if k == "Fn::And":
                return all(self.value(x) for x in a)
            if k in ("Condition", "Fn::Condition"):
                return self.condition(a)
        return {k: x for k, x in ((k, self.value(x)) for k, x in v.items()) if x is not None}

    def admin_arn(self):
        """The admin as the key and secret policies name it."""
        st = self.value(self.res["SigningSecretKey"]["Properties"]["KeyPolicy"])["Statement"]
        return next(s["Principal"]["AWS"] for s in st if s.get("Sid") == "AdminManagesTheKey")


def role_of(function):
    role = function.get("Properties", {}).get("Role")
    if isinstance(role, dict) and "Fn::GetAtt" in role:
        att = role["Fn::GetAtt"]
        return (att if isinstance(att, list) else att.split("."))[0]
    return None


def role_policies(template, role):
    """The policy documents of a role: inline ones, both branches of an If, and every
    AWS::IAM::RolePolicy that names the role (unresolved)."""
    found = []

    def walk(p):
        if isinstance(p, dict) and "Fn::If" in p:
            for branch in p["Fn::If"][1:]:
                walk(branch)
        elif isinstance(p, dict) and "PolicyDocument" in p:
            found.append(p["PolicyDocument"])

    res = template.get("Resources", {})
    for p in res.get(role, {}).get("Properties", {}).get("Policies", []):
        walk(p)
    for r in res.values():
        if r.get("Type") == "AWS::IAM::RolePolicy" and r.get("Properties", {}).get("RoleName") == {"Ref": role}:
            found.append(r["Properties"]["PolicyDocument"])
    return found


def statements(template, function):
    """Every IAM statement a function's role may carry."""
    role = role_of(template.get("Resources", {}).get(function, {}))
    return [st for doc in role_policies(template, role) for st in doc.get("Statement", [])] if role else []


def actions(statement):
    a = statement.get("Action", [])
    return [a] if isinstance(a, str) else list(a)


def listed(v):
    return [v] if isinstance(v, str) else list(v or [])


CRYPTO = ["kms:Decrypt", "kms:Encrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:GenerateDataKey",
          "kms:GenerateDataKeyWithoutPlaintext", "kms:CreateGrant"]
ISSUER_PREFIXES = ["owner#*", "pw#*", "rate#*", "trigger#*"]
RETIRED = {
    "EC2PASS_SLACK_SIGNING_SECRET": "the signing secret lives only in Secrets Manager",
    "EC2PASS_SLACK_SIGNING_SECRET_PARAM": "the signing secret lives only in Secrets Manager",
    "EC2PASS_EXEMPT_AUTOSCALING": "replaced by EC2PASS_EXEMPT_GROUPS",
}


def invariants(template):
    """Product rules the template must keep; a list of violations."""
    problems = []
    res = template.get("Resources", {})
    params = template.get("Parameters", {})
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
        if "ReservedConcurrentExecutions" not in props:
            problems.append(f"{name}: needs ReservedConcurrentExecutions (the guard's capacity must be its own, the issuer's capped)")
        for st in statements(template, name):
            for action in actions(st):
                if action == "*" or action.endswith(":*") or "*" in action.split(":", 1)[-1]:
                    problems.append(f"{name}: wildcard action {action}")
            if st.get("Effect") != "Allow":
                problems.append(f"{name}: unexpected Effect {st.get('Effect')}")
    if "RolePath" in glob:
        problems.append("Globals: RolePath is a carve-out anyone with iam:CreateRole can use; the roles are named exactly instead")
    # Roles named exactly <stack>-issuer and <stack>-guard, trusted by Lambda only.
    for fn_name, role_name, suffix in (("IssuerFunction", "IssuerRole", "issuer"), ("GuardFunction", "GuardRole", "guard")):
        fn = functions.get(fn_name)
        if fn and role_of(fn) != role_name:
            problems.append(f"{fn_name}: must run as the stack's {role_name} (Role: !GetAtt {role_name}.Arn)")
        role = res.get(role_name, {})
        props = role.get("Properties", {})
        if role.get("Type") != "AWS::IAM::Role":
            problems.append(f"{role_name}: missing (an AWS::IAM::Role the policies can name exactly)")
            continue
        if props.get("RoleName") != {"Fn::Sub": f"${{AWS::StackName}}-{suffix}"}:
            problems.append(f"{role_name}: RoleName must be ${{AWS::StackName}}-{suffix}, the exact name infra/policies exempt")
        if props.get("Path", "/") != "/":
            problems.append(f"{role_name}: must have path / (the policies name arn:aws:iam::*:role/ec2pass-{suffix})")
        trusted = [st.get("Principal") for st in props.get("AssumeRolePolicyDocument", {}).get("Statement", [])]
        if trusted != [{"Service": "lambda.amazonaws.com"}]:
            problems.append(f"{role_name}: only lambda.amazonaws.com may assume it, found {trusted}")
        if {"Key": "ec2pass:role", "Value": suffix} not in props.get("Tags", []):
            problems.append(f"{role_name}: needs the tag ec2pass:role={suffix}")
    issuer, guard = functions.get("IssuerFunction"), functions.get("GuardFunction")
    if issuer:
        url = issuer["Properties"].get("FunctionUrlConfig", {})
        if url.get("AuthType") != "NONE":
            problems.append("IssuerFunction: the function URL must be AuthType NONE (Slack cannot sign with SigV4)")
        sts = statements(template, "IssuerFunction")
        granted = {a for st in sts for a in actions(st)}
        for forbidden in ("ec2:StopInstances", "ec2:DeleteTags", "ec2:TerminateInstances", "ec2:CreateTags",
                          "ec2:ModifyInstanceAttribute", "sns:Publish", "dynamodb:Scan", "dynamodb:Query", "dynamodb:BatchWriteItem"):
            if forbidden in granted:
                problems.append(f"IssuerFunction: must not be allowed {forbidden}")
        env = issuer["Properties"].get("Environment", {}).get("Variables", {})
        if env.get("EC2PASS_SLACK_SIGNING_SECRET_ARN") != {"Ref": "SigningSecret"}:
            problems.append("IssuerFunction: EC2PASS_SLACK_SIGNING_SECRET_ARN must be !Ref SigningSecret")
        for st in sts:
            acts = actions(st)
            res_ = st.get("Resource")
            if any(a.startswith("dynamodb:") for a in acts) and res_ == {"Fn::GetAtt": ["Table", "Arn"]}:
                cond = st.get("Condition", {})
                keys = sorted(listed(cond.get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys")))
                if keys != ISSUER_PREFIXES:
                    problems.append(f"IssuerFunction: table access must be limited with ForAllValues:StringLike dynamodb:LeadingKeys {ISSUER_PREFIXES} (its own items, never verdicts), found {keys}")
                if str(cond.get("Null", {}).get("dynamodb:LeadingKeys")).lower() != "false":
                    problems.append("IssuerFunction: its LeadingKeys condition needs Null dynamodb:LeadingKeys false (ForAllValues alone holds when the key is absent)")
            if "secretsmanager:GetSecretValue" in acts and res_ != {"Ref": "SigningSecret"}:
                problems.append("IssuerFunction: secretsmanager:GetSecretValue on anything but the SigningSecret")
            if "kms:Decrypt" in acts and (res_ != {"Fn::GetAtt": ["SigningSecretKey", "Arn"]}
                                          or "kms:ViaService" not in st.get("Condition", {}).get("StringEquals", {})):
                problems.append("IssuerFunction: kms:Decrypt only on SigningSecretKey, through Secrets Manager (kms:ViaService)")
        if "secretsmanager:GetSecretValue" not in granted:
            problems.append("IssuerFunction: cannot read its signing secret (secretsmanager:GetSecretValue)")
    for var in RETIRED:
        for fn_name, fn in functions.items():
            if var in fn.get("Properties", {}).get("Environment", {}).get("Variables", {}):
                problems.append(f"{fn_name}: sets {var}: {RETIRED[var]} (an environment variable is readable with lambda:GetFunctionConfiguration)")
    for p in ("SlackSigningSecret", "SlackSigningSecretParameter"):
        if p in params:
            problems.append(f"parameter {p}: the signing secret must not pass through the template")
    if guard:
        sts = statements(template, "GuardFunction")
        deletes = [st for st in sts if "ec2:DeleteTags" in actions(st)]
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
        granted = {a for st in sts for a in actions(st)}
        if any(a.startswith("secretsmanager:") for a in granted) or any(
                st.get("Resource") == {"Fn::GetAtt": ["SigningSecretKey", "Arn"]} for st in sts):
            problems.append("GuardFunction: must not reach the signing secret or its key")
        if not any("dynamodb:Query" in actions(st) and st.get("Resource") == {"Fn::Sub": "${Table.Arn}/index/alerts-due"} for st in sts):
            problems.append("GuardFunction: needs dynamodb:Query on the alerts-due index (alerts not yet sent)")
        if not any("dynamodb:DescribeTable" in actions(st) for st in sts):
            problems.append("GuardFunction: needs dynamodb:DescribeTable (its activation time is the table's creation time)")
        env = guard["Properties"].get("Environment", {}).get("Variables", {})
        if env.get("EC2PASS_AUTH_TAG", "Auth") != "Auth":
            problems.append("GuardFunction: EC2PASS_AUTH_TAG differs from the tag key the IAM condition allows")
        problems += state_change_invariants(template)
        on_failure = guard["Properties"].get("EventInvokeConfig", {}).get("DestinationConfig", {}).get("OnFailure", {})
        if on_failure.get("Type") != "SQS":
            problems.append("GuardFunction: needs an SQS on-failure destination")
        if not any("sqs:SendMessage" in actions(st) for st in sts):
            problems.append("GuardFunction: its role needs sqs:SendMessage on the failure queue (the on-failure destination)")
        problems += guard_permissions_follow_settings(template)
    # Safe defaults; softer behaviour only as an opt-in (docs/configuration.md).
    for param, safe in (("UnstoppableAction", "terminate"), ("ClearStopProtection", "true"), ("AlertExemptions", "true"),
                        ("ExemptAutoScalingGroups", ""), ("FailMode", "closed")):
        if param in params and str(params[param].get("Default")) != safe:
            problems.append(f"parameter {param}: the default must be {safe!r}, found {params[param].get('Default')!r}")
    for param in ("AdminRoleArn", "ExemptAutoScalingGroups", "AlertExemptions", "SweepWindow",
                  "GuardReservedConcurrency", "IssuerReservedConcurrency"):
        if param not in params:
            problems.append(f"missing parameter {param}")
    if params.get("SweepWindow", {}).get("AllowedPattern") != params.get("VerdictRetention", {}).get("AllowedPattern"):
        problems.append("parameter SweepWindow: must take durations like VerdictRetention")
    problems += secret_invariants(template)
    table = table_resource(template)
    if table.get("BillingMode") != "PAY_PER_REQUEST":
        problems.append("Table: not on-demand")
    if not table.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled"):
        problems.append("Table: point-in-time recovery is off")
    if table.get("TimeToLiveSpecification", {}).get("AttributeName") != "ttl":
        problems.append("Table: TTL must be on the ttl attribute")
    if not table.get("SSESpecification", {}).get("SSEEnabled"):
        problems.append("Table: encryption is not set")
    indexes = {i.get("IndexName"): i for i in table.get("GlobalSecondaryIndexes", [])}
    due = indexes.get("alerts-due", {})
    if due.get("KeySchema") != [{"AttributeName": "alert_due", "KeyType": "HASH"},
                                {"AttributeName": "alert_lease_until", "KeyType": "RANGE"}] \
            or due.get("Projection") != {"ProjectionType": "ALL"}:
        problems.append("Table: needs the sparse index alerts-due (hash alert_due, range alert_lease_until, projection ALL)")
    defined = {(a["AttributeName"], a["AttributeType"]) for a in table.get("AttributeDefinitions", [])}
    if not {("alert_due", "S"), ("alert_lease_until", "N")} <= defined:
        problems.append("Table: AttributeDefinitions must define alert_due (S) and alert_lease_until (N)")
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
                         for st in statements(template, "GuardFunction")):
        problems.append("GuardFunction: needs kms:GenerateDataKey on AlertKey to publish to the encrypted topic")
    problems += alarm_invariants(template)
    queue = res.get("GuardFailures", {}).get("Properties", {})
    if queue.get("QueueName") != {"Fn::Sub": "${AWS::StackName}-guard-failures"}:
        problems.append("GuardFailures: QueueName must be ${AWS::StackName}-guard-failures (the SCP protects ec2pass-* queues)")
    for logical in ("AlertKeyAlias", "SigningSecretKeyAlias"):
        alias = res.get(logical, {}).get("Properties", {}).get("AliasName", {})
        if not str(alias.get("Fn::Sub", "") if isinstance(alias, dict) else "").startswith("alias/${AWS::StackName}-"):
            problems.append(f"{logical}: the alias must start with alias/${{AWS::StackName}}- (the SCP finds the keys by kms:ResourceAliases)")
    outputs = template.get("Outputs", {})
    for out in ("SlackRequestUrl", "AlertTopicArn", "SigningSecretArn"):
        if out not in outputs:
            problems.append(f"missing output {out}")
    return problems


def state_change_invariants(template):
    """EC2 state changes reach the guard through the state-change queue, in batches (SPEC section 8):
    the rule sends them to the queue, the queue hands them to the guard through an event source
    mapping with partial batch responses, and what cannot be finished ends in GuardFailures."""
    problems = []
    res = template.get("Resources", {})
    guard = res.get("GuardFunction", {}).get("Properties", {})
    events = guard.get("Events", {})
    queue_ref = {"Fn::GetAtt": ["StateChangeQueue", "Arn"]}
    failures_ref = {"Fn::GetAtt": ["GuardFailures", "Arn"]}
    if any(e.get("Type") == "EventBridgeRule" for e in events.values()):
        problems.append("GuardFunction: an EventBridgeRule event invokes the guard once per state change (2,000 throttled invocations for a burst of 1,000); state changes go through the StateChangeQueue")
    if not any(e.get("Type") == "Schedule" for e in events.values()):
        problems.append("GuardFunction: needs the sweep's Schedule event")
    # The rule: pending and running, to the queue, retried for at most 10 minutes, then GuardFailures.
    rule = res.get("GuardFunctionStateChange", {})
    props = rule.get("Properties", {})
    pattern = props.get("EventPattern", {})
    if rule.get("Type") != "AWS::Events::Rule" or pattern.get("source") != ["aws.ec2"] \
            or pattern.get("detail-type") != ["EC2 Instance State-change Notification"] \
            or sorted(pattern.get("detail", {}).get("state", [])) != ["pending", "running"]:
        problems.append("GuardFunctionStateChange: needs an AWS::Events::Rule for EC2 state changes to pending and running")
    targets = props.get("Targets", [])
    if [x.get("Arn") for x in targets] != [queue_ref]:
        problems.append("GuardFunctionStateChange: its one target must be the StateChangeQueue")
    for target in targets:
        retry = target.get("RetryPolicy", {})
        if "MaximumRetryAttempts" not in retry or int(retry.get("MaximumEventAgeInSeconds", 86400)) > 600:
            problems.append("GuardFunctionStateChange: the target needs a RetryPolicy with MaximumEventAgeInSeconds at most 600 (the guard relies on it)")
        if target.get("DeadLetterConfig", {}).get("Arn") != failures_ref:
            problems.append("GuardFunctionStateChange: what the rule cannot deliver must go to GuardFailures (DeadLetterConfig)")
    # The event source mapping.
    mappings = [e.get("Properties", {}) for e in events.values() if e.get("Type") == "SQS"]
    if [m.get("Queue") for m in mappings] != [queue_ref]:
        problems.append("GuardFunction: needs one SQS event from the StateChangeQueue")
    for m in mappings:
        if "ReportBatchItemFailures" not in m.get("FunctionResponseTypes", []):
            problems.append("GuardFunction: its SQS event needs FunctionResponseTypes ReportBatchItemFailures (otherwise one pending instance sends the whole batch round again)")
        window = m.get("MaximumBatchingWindowInSeconds")
        if not isinstance(window, int) or window > 1 or (window < 1 and int(m.get("BatchSize", 10)) > 10):
            problems.append("GuardFunction: its SQS event needs a batching window of at most 1 s (at least 1 s for batches over 10): an unauthorized instance runs while a batch fills")
        if int(m.get("BatchSize", 10)) < 10:
            problems.append("GuardFunction: its SQS event's BatchSize is too small to describe and stop a burst in few EC2 calls")
        if m.get("ScalingConfig", {}).get("MaximumConcurrency") != {"Ref": "GuardQueueConcurrency"}:
            problems.append("GuardFunction: its SQS event needs ScalingConfig MaximumConcurrency !Ref GuardQueueConcurrency (within the reserved concurrency)")
    params = template.get("Parameters", {})
    cap, reserved = params.get("GuardQueueConcurrency", {}), params.get("GuardReservedConcurrency", {})
    if int(cap.get("MinValue", 0)) < 2:
        problems.append("parameter GuardQueueConcurrency: MinValue must be at least 2 (AWS's minimum MaximumConcurrency)")
    if "Default" in cap and "Default" in reserved and int(cap["Default"]) > int(reserved["Default"]):
        problems.append("parameter GuardQueueConcurrency: its default exceeds GuardReservedConcurrency's (batches would be throttled)")
    # The guard takes, deletes and hands back messages of the state-change queue only.
    sts = statements(template, "GuardFunction")
    needed = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"}
    granted = {a for st in sts if st.get("Resource") == queue_ref for a in actions(st)}
    if needed - granted:
        problems.append(f"GuardRole: the event source mapping and the hand-back need {sorted(needed - granted)} on the StateChangeQueue")
    for st in sts:
        if set(actions(st)) & (needed - {"sqs:GetQueueAttributes"}) and st.get("Resource") != queue_ref:
            problems.append("GuardRole: may receive, delete or hand back messages of the StateChangeQueue only")
    env = guard.get("Environment", {}).get("Variables", {})
    if env.get("EC2PASS_STATE_CHANGE_QUEUE_URL") != {"Ref": "StateChangeQueue"}:
        problems.append("GuardFunction: EC2PASS_STATE_CHANGE_QUEUE_URL must be !Ref StateChangeQueue (the guard hands pending starts back to it)")
    # The queue.
    queue = res.get("StateChangeQueue", {})
    q = queue.get("Properties", {})
    if queue.get("Type") != "AWS::SQS::Queue":
        return problems + ["StateChangeQueue: missing (an AWS::SQS::Queue)"]
    if q.get("QueueName") != {"Fn::Sub": "${AWS::StackName}-state-changes"}:
        problems.append("StateChangeQueue: QueueName must be ${AWS::StackName}-state-changes (the SCP protects ec2pass-*state-changes)")
    if str(q.get("SqsManagedSseEnabled")).lower() != "true" or "KmsMasterKeyId" in q:
        problems.append("StateChangeQueue: must be encrypted with SSE-SQS (SqsManagedSseEnabled; EventBridge cannot send to a queue under aws/sqs)")
    timeout = int(guard.get("Timeout", template.get("Globals", {}).get("Function", {}).get("Timeout", 3)))
    if int(q.get("VisibilityTimeout", 30)) < 6 * timeout:
        problems.append(f"StateChangeQueue: VisibilityTimeout must be at least six times the guard's Timeout ({6 * timeout} s; \"Using Lambda with Amazon SQS\")")
    redrive = q.get("RedrivePolicy", {})
    if redrive.get("deadLetterTargetArn") != failures_ref or not 5 <= int(redrive.get("maxReceiveCount", 0)) <= 20:
        problems.append("StateChangeQueue: needs a RedrivePolicy to GuardFailures with a maxReceiveCount from 5 to 20 (minutes of pending, then the failure alarm)")
    # EventBridge's right to send: Principal Mapper models no service principals, so it is
    # asserted here; who else may send, take or manage is evaluated by the claims.
    rule_arn = {"Fn::GetAtt": ["GuardFunctionStateChange", "Arn"]}
    for logical in ("StateChangeQueue", "GuardFailures"):
        docs = [r["Properties"].get("PolicyDocument", {}) for r in res.values() if r.get("Type") == "AWS::SQS::QueuePolicy"
                and {"Ref": logical} in r.get("Properties", {}).get("Queues", [])]
        lets_the_rule_in = any(
            st.get("Effect") == "Allow" and st.get("Principal") == {"Service": "events.amazonaws.com"}
            and "sqs:SendMessage" in actions(st) and st.get("Resource") == {"Fn::GetAtt": [logical, "Arn"]}
            and st.get("Condition", {}).get("ArnEquals", {}).get("aws:SourceArn") == rule_arn
            for d in docs for st in d.get("Statement", []))
        if len(docs) != 1 or not lets_the_rule_in:
            problems.append(f"{logical}: needs one AWS::SQS::QueuePolicy letting events.amazonaws.com sqs:SendMessage with aws:SourceArn the rule GuardFunctionStateChange, and no one else's rule")
        for d in docs:
            for st in d.get("Statement", []):
                if st.get("Effect") == "Allow" and st.get("Principal") != {"Service": "events.amazonaws.com"}:
                    problems.append(f"{logical}: its queue policy allows {st.get('Principal')!r}; it allows only EventBridge's rule")
                # The rule's deliveries carry aws:SourceArn and no aws:PrincipalArn: a Deny of
                # SendMessage that does not carve them out by aws:SourceArn refuses them too.
                if st.get("Effect") == "Deny" and "sqs:SendMessage" in actions(st) \
                        and st.get("Condition", {}).get("ArnNotEquals", {}).get("aws:SourceArn") != rule_arn:
                    problems.append(f"{logical}: the queue policy's Deny {st.get('Sid')} of sqs:SendMessage must except the rule (ArnNotEquals aws:SourceArn), or no state change arrives")
    return problems


def guard_permissions_follow_settings(template):
    """ModifyInstanceAttribute whenever the guard terminates or clears stop protection (it clears
    termination protection first), TerminateInstances exactly when it terminates."""
    problems = []
    for action in ("terminate", "alert-only"):
        for clear in ("true", "false"):
            r = Resolver(template, {"UnstoppableAction": action, "ClearStopProtection": clear})
            role = role_of(template["Resources"].get("GuardFunction", {}))
            try:
                docs = r.value(template["Resources"][role]["Properties"].get("Policies", []))
            except Exception as e:  # a condition that does not exist
                return [f"GuardRole: its policies do not resolve: {e!r}"]
            granted = {a for d in docs for st in d["PolicyDocument"]["Statement"] for a in listed(st["Action"])}
            modify = action == "terminate" or clear == "true"
            if ("ec2:ModifyInstanceAttribute" in granted) != modify:
                problems.append(f"GuardRole: with UnstoppableAction={action}, ClearStopProtection={clear} ec2:ModifyInstanceAttribute must be {'granted' if modify else 'absent'}")
            if ("ec2:TerminateInstances" in granted) != (action == "terminate"):
                problems.append(f"GuardRole: with UnstoppableAction={action} ec2:TerminateInstances must be {'granted' if action == 'terminate' else 'absent'}")
    return problems


def secret_invariants(template):
    """The signing secret: in Secrets Manager under its own key, which only the issuer's role
    (through Secrets Manager) and the admin may use to decrypt; the admin keeps the key."""
    problems = []
    res = template.get("Resources", {})
    secret = res.get("SigningSecret", {})
    props = secret.get("Properties", {})
    if secret.get("Type") != "AWS::SecretsManager::Secret":
        return ["SigningSecret: missing (an AWS::SecretsManager::Secret)"]
    if props.get("KmsKeyId") != {"Ref": "SigningSecretKey"}:
        problems.append("SigningSecret: must be encrypted with the stack's SigningSecretKey (aws/secretsmanager decrypts for anyone in the account)")
    # The template holds only the placeholder the issuer refuses to start with, never a value.
    placeholder = re.search(r'pub const PLACEHOLDER: &str = "([^"]+)";',
                            (ROOT / "issuer" / "src" / "secret.rs").read_text(encoding="utf-8"))
    if "GenerateSecretString" in props or not placeholder or props.get("SecretString") != placeholder.group(1):
        problems.append("SigningSecret: SecretString must be the placeholder the issuer refuses (issuer/src/secret.rs PLACEHOLDER), never a value")
    if props.get("Name") != {"Fn::Sub": "${AWS::StackName}-slack-signing-secret"}:
        problems.append("SigningSecret: Name must be ${AWS::StackName}-slack-signing-secret (the SCP protects ec2pass-* secrets)")
    if "SigningSecretKey" not in res:
        return problems + ["SigningSecretKey: missing"]
    r = Resolver(template)
    try:
        kp = r.value(res["SigningSecretKey"]["Properties"]["KeyPolicy"])
        admin = r.admin_arn()
    except Exception:
        return problems + ["SigningSecretKey: the key policy needs the statement AdminManagesTheKey naming the admin (or the key can be locked out)"]
    issuer = r.getatt("IssuerRole", "Arn")
    root = f"arn:aws:iam::{ACCOUNT}:root"
    if admin != f"arn:aws:iam::{ACCOUNT}:role/ec2pass-admin":
        problems.append(f"SigningSecretKey: with AdminRoleArn empty the admin must be role/ec2pass-admin, found {admin}")
    admin_keeps = False
    for st in kp["Statement"]:
        principal = st.get("Principal")
        who = listed(principal.get("AWS")) if isinstance(principal, dict) else ["*"]
        acts = actions(st)
        crypto = [c for c in CRYPTO if any(fnmatch.fnmatchcase(c, a) for a in acts)]
        if st.get("Effect") != "Allow":
            continue
        if who == [admin] and any(a in ("kms:*", "kms:PutKeyPolicy") for a in acts):
            admin_keeps = True
        for w in who:
            if w == admin:
                continue
            if w == issuer:
                if set(crypto) - {"kms:Decrypt"} or "kms:ViaService" not in st.get("Condition", {}).get("StringEquals", {}):
                    problems.append("SigningSecretKey: the issuer's role may only kms:Decrypt, and only through Secrets Manager (kms:ViaService)")
            elif crypto:
                problems.append(f"SigningSecretKey: {w} may {', '.join(crypto)} (only the issuer's role and the admin may decrypt{'; the account keeps administrative actions only' if w == root else ''})")
            if w == "*" or (isinstance(principal, str) and principal == "*"):
                problems.append("SigningSecretKey: a statement for every principal")
    if not admin_keeps:
        problems.append("SigningSecretKey: the admin must keep kms:* (or at least kms:PutKeyPolicy) in the key policy, or the key is locked out")
    policies = [x for x in res.values() if x.get("Type") == "AWS::SecretsManager::ResourcePolicy"
                and x.get("Properties", {}).get("SecretId") == {"Ref": "SigningSecret"}]
    if len(policies) != 1:
        return problems + ["SigningSecret: needs one AWS::SecretsManager::ResourcePolicy"]
    rp = r.value(policies[0]["Properties"]["ResourcePolicy"])
    if str(policies[0]["Properties"].get("BlockPublicPolicy")).lower() != "true":
        problems.append("SigningSecretPolicy: BlockPublicPolicy must be true")

    def denied_but(action):
        out = []
        for st in rp["Statement"]:
            if st.get("Effect") == "Deny" and st.get("Principal") == "*" and any(fnmatch.fnmatchcase(action, a) for a in actions(st)):
                cond = st.get("Condition", {})
                out.append(sorted(listed((cond.get("ArnNotEquals") or cond.get("ArnNotLike") or {}).get("aws:PrincipalArn"))))
        return out

    if sorted([issuer, admin]) not in denied_but("secretsmanager:GetSecretValue"):
        problems.append("SigningSecretPolicy: must deny secretsmanager:GetSecretValue to every principal but the issuer's role and the admin")
    for action in ("secretsmanager:PutResourcePolicy", "secretsmanager:DeleteResourcePolicy", "secretsmanager:PutSecretValue",
                   "secretsmanager:UpdateSecret", "secretsmanager:DeleteSecret"):
        if [admin] not in denied_but(action):
            problems.append(f"SigningSecretPolicy: must deny {action} to every principal but the admin")
    return problems


ALARMED = [  # (namespace, metric, dimension, value, what it catches)
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", {"Fn::GetAtt": ["GuardFailures", "QueueName"]}, "events in the failure queue"),
    ("AWS/Lambda", "Errors", "FunctionName", {"Ref": "GuardFunction"}, "guard errors"),
    ("AWS/Lambda", "Throttles", "FunctionName", {"Ref": "GuardFunction"}, "guard throttles"),
    ("AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", {"Fn::GetAtt": ["StateChangeQueue", "QueueName"]}, "state changes waiting in the queue"),
    ("AWS/Lambda", "AsyncEventsDropped", "FunctionName", {"Ref": "GuardFunction"}, "sweeps Lambda dropped"),
]


def alarm_invariants(template):
    problems = []
    alarms = {n: r["Properties"] for n, r in template.get("Resources", {}).items() if r.get("Type") == "AWS::CloudWatch::Alarm"}
    for name, props in alarms.items():
        if not str(props.get("AlarmName", {}).get("Fn::Sub", "") if isinstance(props.get("AlarmName"), dict) else "").startswith("${AWS::StackName}-"):
            problems.append(f"{name}: AlarmName must start with ${{AWS::StackName}}- (the SCP protects ec2pass-* alarms)")
        if {"Ref": "AlertTopic"} not in props.get("AlarmActions", []):
            problems.append(f"{name}: must announce itself on the AlertTopic")
    for ns, metric, dim, value, what in ALARMED:
        if not any(p.get("Namespace") == ns and p.get("MetricName") == metric
                   and {"Name": dim, "Value": value} in p.get("Dimensions", []) for p in alarms.values()):
            problems.append(f"missing alarm on {ns} {metric} of {json.dumps(value)} ({what})")
    for rule in ("GuardFunctionStateChange", "GuardFunctionSweep"):
        if not any(p.get("MetricName") == "FailedInvocations" and {"Name": "RuleName", "Value": {"Ref": rule}} in p.get("Dimensions", [])
                   for p in alarms.values()):
            problems.append(f"missing alarm on AWS/Events FailedInvocations of {rule}")
    age = [p for p in alarms.values() if p.get("MetricName") == "ApproximateAgeOfOldestMessage"]
    if age and not all(float(p.get("Threshold", 1e9)) <= 60 and p.get("Statistic") == "Maximum" for p in age):
        problems.append("the state-change queue's age alarm must fire on the Maximum above 60 s at most (unauthorized instances run that long)")
    if any(p.get("MetricName") == "AsyncEventAge" for p in alarms.values()):
        problems.append("an AsyncEventAge alarm measures asynchronous invocations, which state changes no longer are: alarm on the queue's age")
    return problems


# ---------------------------------------------------------------------------------------------
# The example policies.
# ---------------------------------------------------------------------------------------------

ADMIN_SCP = "arn:aws:iam::*:role/ec2pass-admin"
CARVE_OUTS = {ADMIN_SCP, "arn:aws:iam::*:role/ec2pass-issuer", "arn:aws:iam::*:role/ec2pass-guard"}
PLACEHOLDERS = {  # placeholder in a policy file -> the example value the claims use
    "REPLACE-WITH-EACH-GUARDED-REGION": REGION,
    "REPLACE-WITH-AN-ALLOW-LISTED-GROUP": "web",
    "REPLACE-WITH-ITS-LAUNCH-TEMPLATE-ID": "lt-0123456789abcdef0",
}


def load_policies():
    return {p.name: json.loads(p.read_text()) for p in sorted(POLICIES.glob("*.json"))}


def statement_index(policies):
    """{Sid: (file, statement)} over every policy file."""
    return {st.get("Sid"): (name, st) for name, doc in policies.items() for st in doc.get("Statement", [])}


def policy_invariants(template, policies):
    """The shape of the example policies; what they mean is evaluated by the claims below."""
    problems = []
    for needed in ("protect-auth-tag.json", "protect-guard-scp.json", "protect-secret-and-exemptions-scp.json",
                   "deny-unguarded-regions-scp.json"):
        if needed not in policies:
            problems.append(f"infra/policies/{needed} is missing")
    sids = [st.get("Sid") for doc in policies.values() for st in doc.get("Statement", [])]
    for sid in sorted({s for s in sids if sids.count(s) > 1}):
        problems.append(f"infra/policies: the Sid {sid} is used twice")
    for name, doc in policies.items():
        if doc.get("Version") != "2012-10-17":
            problems.append(f"{name}: Version must be 2012-10-17")
        if len(json.dumps(doc, separators=(",", ":"))) > 5120:
            problems.append(f"{name}: longer than the 5,120 characters AWS Organizations allows in a policy (minified)")
        for st in doc.get("Statement", []):
            cond = st.get("Condition", {})
            sid = st.get("Sid")
            if st.get("Effect") != "Deny":
                problems.append(f"{name} {sid}: must be a Deny (these policies only take away)")
            if "ForAllValues:StringEquals" in cond and "aws:TagKeys" in cond["ForAllValues:StringEquals"]:
                problems.append(f"{name} {sid}: a Deny on aws:TagKeys needs ForAnyValue (ForAllValues misses the key sent with other keys, and matches no keys at all)")
            exempt = [v for op in ("ArnNotLike", "ArnNotEquals") for v in listed(cond.get(op, {}).get("aws:PrincipalArn"))]
            if not exempt:
                problems.append(f"{name} {sid}: must except the admin (ArnNotLike aws:PrincipalArn {ADMIN_SCP})")
            for v in exempt:
                if v not in CARVE_OUTS:
                    problems.append(f"{name} {sid}: the carve-out {v} is not one of the exact ec2pass roles {sorted(CARVE_OUTS)} (a path or a wildcard can be borrowed)")
            if ADMIN_SCP not in exempt:
                problems.append(f"{name} {sid}: must except the admin {ADMIN_SCP}")
            if "lambda:InvokeFunctionUrl" in actions(st):
                problems.append(f"{name} {sid}: must not deny lambda:InvokeFunctionUrl (Slack calls the issuer's URL)")
    tag_policy = policies.get("protect-auth-tag.json", {})
    if not any(st.get("Action") == "ec2:DeleteTags" and st.get("Condition", {}).get("Null", {}).get("aws:TagKeys") == "true"
               for st in tag_policy.get("Statement", [])):
        problems.append("protect-auth-tag: DeleteTags without tags (which deletes every tag, Auth included) is not denied")
    for st in tag_policy.get("Statement", []):
        exempt = set(listed(st.get("Condition", {}).get("ArnNotLike", {}).get("aws:PrincipalArn")))
        if exempt != {"arn:aws:iam::*:role/ec2pass-guard", ADMIN_SCP}:
            problems.append(f"protect-auth-tag {st.get('Sid')}: must except exactly the guard's role and the admin, found {sorted(exempt)}")
    index = statement_index(policies)
    for sid, placeholder in (("KeepTheAllowListedGroups", "REPLACE-WITH-AN-ALLOW-LISTED-GROUP"),
                             ("KeepTheirLaunchTemplates", "REPLACE-WITH-ITS-LAUNCH-TEMPLATE-ID"),
                             ("NoComputeOutsideTheGuardedRegions", "REPLACE-WITH-EACH-GUARDED-REGION")):
        if sid not in index or placeholder not in json.dumps(index[sid][1]):
            problems.append(f"infra/policies: the example statement {sid} with its placeholder {placeholder} is missing")
    params = template.get("Parameters", {})
    for key in (params.get("ExemptTag", {}).get("Default"), params.get("GuardTag", {}).get("Default")):
        for sid in ("KeepTheExemptionTags", "NoExemptionTagsAtLaunch", "NoExemptionTagsOnGroups"):
            keys = index.get(sid, (None, {}))[1].get("Condition", {}).get("ForAnyValue:StringEquals", {}).get("aws:TagKeys", [])
            if key not in keys:
                problems.append(f"{sid}: the {key} tag is not denied (it would switch the guard off for an instance)")
    return problems


def parliament_findings(policies, stack_policies):
    """parliament, on the example policies and on the stack's resolved policies (the roles', the
    keys', the secret's): unknown actions,
    condition keys AWS never sets for an action (a Deny on such a key never matches), malformed
    statements. parliament checks a condition key against the action's own keys only, so a key
    of the action's resource type (kms:ResourceAliases on key) is looked up in its definitions."""
    import parliament

    definitions = {s["prefix"]: s for s in json.loads((Path(parliament.__file__).parent / "iam_definition.json").read_text())}

    def resource_type_key(detail):
        m = re.match(r"Unknown condition (\S+) for action (\S+):(\S+)", detail)
        if not m:
            return False
        key, prefix, name = m.groups()
        service = definitions.get(prefix, {})
        types = {rt["resource_type"].rstrip("*") for p in service.get("privileges", []) if p["privilege"] == name
                 for rt in p["resource_types"]}
        return any(key in r["condition_keys"] for r in service.get("resources", []) if r["resource"] in types)

    problems = []
    for name, doc in list(policies.items()) + list(stack_policies.items()):
        for f in parliament.analyze_policy_string(json.dumps(doc)).findings:
            if f.issue == "UNKNOWN_CONDITION_FOR_ACTION" and resource_type_key(str(f.detail)):
                continue
            if f.issue in ("UNKNOWN_ACTION", "UNKNOWN_PREFIX", "UNKNOWN_CONDITION_FOR_ACTION", "MALFORMED",
                           "MALFORMED_JSON", "UNKNOWN_OPERATOR", "MISMATCHED_TYPE", "RESOURCE_MISMATCH",
                           "INVALID_ARN", "UNKNOWN_FIELD", "UNKNOWN_PRINCIPAL"):
                problems.append(f"parliament: {name}: {f.issue} {f.detail}")
    return problems


# ---------------------------------------------------------------------------------------------
# Policy claims, evaluated by Principal Mapper's local simulator.
# ---------------------------------------------------------------------------------------------

# principalmapper 1.1.5 (its last release) imports Mapping from collections, which Python 3.10
# moved to collections.abc; this restores the two names it needs and changes nothing else.
for _name in ("Mapping", "MutableMapping"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))

LAMBDA_TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
# The stand-ins (docs/policies.md). AdministratorAccess is AWS's own document; the other two are
# written here, each a superset of what its name suggests, so what they cannot do, the real
# policy cannot do either.
ADMINISTRATOR_ACCESS = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
READ_ONLY_STAND_IN = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*", "Action": [
    "*:Get*", "*:List*", "*:Describe*", "*:BatchGet*", "*:Query", "*:Scan", "*:Select*", "*:Lookup*"]}]}
DEVELOPER_STAND_IN = {"Version": "2012-10-17", "Statement": [
    # AmazonEC2FullAccess, as AWS documents it
    {"Effect": "Allow", "Action": ["ec2:*", "elasticloadbalancing:*", "cloudwatch:*", "autoscaling:*"], "Resource": "*"},
    {"Effect": "Allow", "Action": "iam:CreateServiceLinkedRole", "Resource": "*"},
    # and what a developer or CI role commonly has besides
    {"Effect": "Allow", "Action": ["iam:PassRole", "iam:CreateRole", "iam:TagRole", "iam:PutRolePolicy",
                                   "iam:UpdateAssumeRolePolicy", "lambda:*", "sns:*", "sqs:*", "events:*",
                                   "dynamodb:*", "kms:*", "secretsmanager:*", "eks:*", "batch:*"], "Resource": "*"},
]}
FULL_AWS_ACCESS = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
# AWS's default key policy: the account delegates the key to IAM. Used to show what an SCP does
# on its own, as it would for a key with that policy.
DELEGATING_KEY_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*", "Resource": "*"}]}


class World:
    """The account as the template and the policies make it, for the simulator."""

    def __init__(self, template, policies):
        from principalmapper.common import Node, Policy

        r = Resolver(template)
        res = template.get("Resources", {})
        self.r = r
        self.admin = r.admin_arn() if "SigningSecretKey" in res else f"arn:aws:iam::{ACCOUNT}:role/ec2pass-admin"
        self.issuer_role = r.getatt("IssuerRole", "Arn")
        self.guard_role = r.getatt("GuardRole", "Arn")
        self.secret = r.ref("SigningSecret")
        self.signing_key = r.getatt("SigningSecretKey", "Arn")
        self.alert_key = r.getatt("AlertKey", "Arn")
        self.topic = r.ref("AlertTopic")
        self.subscription = f"{self.topic}:5a1b2c3d-0000-4000-8000-0123456789ab"
        self.queue = r.getatt("GuardFailures", "Arn")
        self.state_queue = r.getatt("StateChangeQueue", "Arn")
        self.mapping = f"arn:aws:lambda:{REGION}:{ACCOUNT}:event-source-mapping:0f0e0d0c-0000-4000-8000-00000000e5a1"
        self.table = r.getatt("Table", "Arn")
        self.guard_fn = r.getatt("GuardFunction", "Arn")
        self.issuer_fn = r.getatt("IssuerFunction", "Arn")
        self.rule = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{r.name('GuardFunctionStateChange')}"
        self.alarms = [f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{r.name(n)}"
                       for n, x in res.items() if x.get("Type") == "AWS::CloudWatch::Alarm"]
        self.instance = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0123456789abcdef0"
        self.group = f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:0f0e0d0c-0000-4000-8000-000000000001:autoScalingGroupName/"
        self.launch_template = f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/lt-0123456789abcdef0"
        self.aliases = {}
        for x in res.values():
            if x.get("Type") == "AWS::KMS::Alias":
                target = x["Properties"]["TargetKeyId"]
                logical = target.get("Ref") if isinstance(target, dict) else None
                if logical:
                    self.aliases[r.getatt(logical, "Arn")] = r.value(x["Properties"]["AliasName"])
        self.resource_policies = {}
        for logical, arn in (("SigningSecretKey", self.signing_key), ("AlertKey", self.alert_key)):
            if "KeyPolicy" in res.get(logical, {}).get("Properties", {}):
                self.resource_policies[arn] = r.value(res[logical]["Properties"]["KeyPolicy"])
        for x in res.values():
            if x.get("Type") == "AWS::SecretsManager::ResourcePolicy":
                self.resource_policies[self.secret] = r.value(x["Properties"]["ResourcePolicy"])
            if x.get("Type") == "AWS::SQS::QueuePolicy":
                for queue in x["Properties"].get("Queues", []):
                    if isinstance(queue, dict) and "Ref" in queue:
                        self.resource_policies[r.getatt(queue["Ref"], "Arn")] = r.value(x["Properties"]["PolicyDocument"])
        self.identity = {}
        for who, fn in (("issuer", "IssuerFunction"), ("guard", "GuardFunction")):
            role = role_of(res.get(fn, {}))
            docs = [r.value(d) for d in role_policies(template, role)] if role else []
            self.identity[who] = docs
        filled = json.loads(self._fill(json.dumps(policies)))
        self.scps = [[Policy("arn:aws:organizations::aws:policy/service_control_policy/p-FullAWSAccess",
                             "FullAWSAccess", FULL_AWS_ACCESS)]
                     + [Policy(f"arn:aws:organizations::{ACCOUNT}:policy/o-example/service_control_policy/p-{i}", n, d)
                        for i, (n, d) in enumerate(sorted(filled.items()))]]

        def node(arn, docs, tags=None):
            return Node(arn, "AROA" + format(abs(hash(arn)) % 10**16, "016d"),
                        [Policy(f"{arn}/policy{i}", f"policy{i}", d) for i, d in enumerate(docs)],
                        [], LAMBDA_TRUST, None, 0, False, False, None, False, tags or {})

        self.who = {
            "the admin": node(self.admin, [ADMINISTRATOR_ACCESS]),
            "the issuer's role": node(self.issuer_role, self.identity["issuer"], {"ec2pass:role": "issuer"}),
            "the guard's role": node(self.guard_role, self.identity["guard"], {"ec2pass:role": "guard"}),
            "an AdministratorAccess role": node(f"arn:aws:iam::{ACCOUNT}:role/ops-admin", [ADMINISTRATOR_ACCESS]),
            "a ReadOnlyAccess holder": node(f"arn:aws:iam::{ACCOUNT}:role/auditor", [READ_ONLY_STAND_IN]),
            "a developer": node(f"arn:aws:iam::{ACCOUNT}:role/developer", [DEVELOPER_STAND_IN]),
            "a role under /ec2pass/": node(f"arn:aws:iam::{ACCOUNT}:role/ec2pass/borrowed", [ADMINISTRATOR_ACCESS]),
        }

    @staticmethod
    def _fill(text):
        for placeholder, value in PLACEHOLDERS.items():
            text = text.replace(placeholder, value)
        return text

    def allowed(self, who, action, resource, context=None, layers="all"):
        """Principal Mapper's verdict. layers: "all" (SCPs and resource policy), "scp" (SCPs;
        a KMS key as if its policy delegated to IAM), "resource" (no SCPs), "none"."""
        from principalmapper.querying.query_interface import local_check_authorization_full

        ctx = {"aws:RequestedRegion": REGION}
        if resource in self.aliases:
            ctx["kms:ResourceAliases"] = [self.aliases[resource]]
        ctx.update(context or {})
        rp = self.resource_policies.get(resource) if layers in ("all", "resource") else None
        if rp is None and resource.startswith("arn:aws:kms:"):
            rp = DELEGATING_KEY_POLICY
        scps = self.scps if layers in ("all", "scp") else None
        return local_check_authorization_full(self.who[who], action, resource, ctx, rp,
                                              ACCOUNT if rp is not None else None, scps, None)


def claims(w):
    """(name, who, actions, resources, context, layers, expected allowed?) for every claim."""
    A, ISS, GRD = "the admin", "the issuer's role", "the guard's role"
    ADM, RO, DEV, PATH = "an AdministratorAccess role", "a ReadOnlyAccess holder", "a developer", "a role under /ec2pass/"
    exempt = {"aws:TagKeys": ["Name", "ec2pass:exempt"]}
    c = [
        # 1. The signing secret.
        ("secret: a ReadOnlyAccess holder cannot read it", RO, ["secretsmanager:GetSecretValue"], [w.secret], {}, "all", False),
        ("secret: an AdministratorAccess role cannot read it", ADM, ["secretsmanager:GetSecretValue"], [w.secret], {}, "all", False),
        ("secret: its resource policy alone keeps an AdministratorAccess role out", ADM, ["secretsmanager:GetSecretValue"], [w.secret], {}, "resource", False),
        ("secret: the SCP alone keeps an AdministratorAccess role out", ADM, ["secretsmanager:GetSecretValue"], [w.secret], {}, "scp", False),
        ("secret: the guard's role cannot read it", GRD, ["secretsmanager:GetSecretValue"], [w.secret], {}, "all", False),
        ("secret: a role under /ec2pass/ cannot read it", PATH, ["secretsmanager:GetSecretValue"], [w.secret], {}, "all", False),
        ("secret: the issuer's role reads it", ISS, ["secretsmanager:GetSecretValue"], [w.secret], {}, "all", True),
        ("secret: the admin reads and replaces it", A, ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"], [w.secret], {}, "all", True),
        ("secret: nobody else changes its policy, value or existence, even without the SCP", ADM,
         ["secretsmanager:PutResourcePolicy", "secretsmanager:DeleteResourcePolicy", "secretsmanager:PutSecretValue",
          "secretsmanager:UpdateSecret", "secretsmanager:DeleteSecret"], [w.secret], {}, "resource", False),
        ("secret key: its key policy lets no AdministratorAccess role decrypt", ADM, ["kms:Decrypt", "kms:CreateGrant", "kms:ReEncryptFrom"],
         [w.signing_key], {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"}, "resource", False),
        ("secret key: the SCP alone keeps an AdministratorAccess role from decrypting", ADM, ["kms:Decrypt", "kms:CreateGrant"],
         [w.signing_key], {}, "scp", False),
        ("secret key: the issuer's role decrypts through Secrets Manager", ISS, ["kms:Decrypt"], [w.signing_key],
         {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"}, "all", True),
        ("secret key: the issuer's role cannot decrypt directly", ISS, ["kms:Decrypt"], [w.signing_key], {}, "all", False),
        ("secret key: the admin manages it", A, ["kms:PutKeyPolicy", "kms:Decrypt"], [w.signing_key], {}, "all", True),
        ("secret key: only the admin rewrites its policy", ADM, ["kms:PutKeyPolicy", "kms:ScheduleKeyDeletion", "kms:DisableKey"], [w.signing_key], {}, "all", False),
        ("secret key (residual): without the SCP an AdministratorAccess role may rewrite its policy", ADM, ["kms:PutKeyPolicy"], [w.signing_key], {}, "resource", True),
        ("functions: nobody but the admin reads their configuration", DEV, ["lambda:GetFunctionConfiguration", "lambda:GetFunction"], [w.guard_fn, w.issuer_fn], {}, "all", False),
        # 4. Forged events.
        ("invoke: a developer cannot invoke the guard", DEV, ["lambda:InvokeFunction", "lambda:InvokeAsync"], [w.guard_fn], {}, "all", False),
        ("invoke: a developer cannot invoke the issuer through IAM", DEV, ["lambda:InvokeFunction"], [w.issuer_fn], {}, "all", False),
        ("invoke: the issuer's function URL is not denied", DEV, ["lambda:InvokeFunctionUrl"], [w.issuer_fn], {"lambda:FunctionUrlAuthType": "NONE"}, "all", True),
        ("invoke: the admin re-drives the guard", A, ["lambda:InvokeFunction"], [w.guard_fn], {}, "all", True),
        ("invoke (control): without the SCP the developer could invoke the guard", DEV, ["lambda:InvokeFunction"], [w.guard_fn], {}, "none", True),
        # 6. Carve-outs nobody can borrow.
        ("roles: a developer cannot pass the issuer's or the guard's role to a Lambda function", DEV, ["iam:PassRole"],
         [w.issuer_role, w.guard_role], {"iam:PassedToService": "lambda.amazonaws.com"}, "all", False),
        ("roles: a developer cannot create a role under /ec2pass/ or named like ec2pass's", DEV, ["iam:CreateRole"],
         [f"arn:aws:iam::{ACCOUNT}:role/ec2pass/borrowed", f"arn:aws:iam::{ACCOUNT}:role/ec2pass-issuer"], {}, "all", False),
        ("roles: a developer cannot take over the admin role", DEV, ["iam:UpdateAssumeRolePolicy", "iam:PutRolePolicy"], [w.admin], {}, "all", False),
        ("roles: a developer cannot tag any role ec2pass:role", DEV, ["iam:TagRole", "iam:CreateRole"],
         [f"arn:aws:iam::{ACCOUNT}:role/developer-lambda"], {"aws:TagKeys": ["ec2pass:role"]}, "all", False),
        ("roles: a developer cannot give the table a resource policy", DEV, ["dynamodb:PutResourcePolicy", "dynamodb:DeleteResourcePolicy"], [w.table], {}, "all", False),
        ("roles: a role under /ec2pass/ cannot write the table", PATH, ["dynamodb:PutItem", "dynamodb:UpdateItem"], [w.table], {"dynamodb:LeadingKeys": ["pw#0123"]}, "all", False),
        ("roles: a role under /ec2pass/ cannot delete an Auth tag", PATH, ["ec2:DeleteTags"], [w.instance], {"aws:TagKeys": ["Auth"]}, "all", False),
        ("roles: the guard's role deletes an Auth tag", GRD, ["ec2:DeleteTags"], [w.instance], {"aws:TagKeys": ["Auth"]}, "all", True),
        ("roles: a developer cannot overwrite an Auth tag", DEV, ["ec2:CreateTags"], [w.instance], {"aws:TagKeys": ["Auth"], "ec2:ResourceTag/Auth": "A1B2"}, "all", False),
        # 7. Muting the alerts.
        ("mute: a developer cannot unsubscribe or filter a subscription", DEV, ["sns:Unsubscribe", "sns:SetSubscriptionAttributes"], [w.subscription], {}, "all", False),
        ("mute: a developer cannot change, re-police or delete the topic", DEV,
         ["sns:SetTopicAttributes", "sns:DeleteTopic", "sns:AddPermission", "sns:RemovePermission"], [w.topic], {}, "all", False),
        ("mute: a developer cannot delete, disable, rewrite or reset an alarm", DEV,
         ["cloudwatch:DeleteAlarms", "cloudwatch:DisableAlarmActions", "cloudwatch:PutMetricAlarm", "cloudwatch:SetAlarmState"], w.alarms, {}, "all", False),
        ("mute: a developer cannot delete, purge, re-police or drain the failure queue", DEV,
         ["sqs:DeleteQueue", "sqs:PurgeQueue", "sqs:SetQueueAttributes", "sqs:AddPermission", "sqs:RemovePermission",
          "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"], [w.queue], {}, "all", False),
        ("mute: the SCP alone keeps a developer from deleting, purging, re-policing or draining the failure queue", DEV,
         ["sqs:DeleteQueue", "sqs:PurgeQueue", "sqs:SetQueueAttributes", "sqs:AddPermission", "sqs:RemovePermission",
          "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"], [w.queue], {}, "scp", False),
        ("mute: a developer cannot disable or delete the alert key", DEV, ["kms:DisableKey", "kms:ScheduleKeyDeletion", "kms:PutKeyPolicy"], [w.alert_key], {}, "all", False),
        ("mute: a developer cannot set the guard's concurrency to 0 or change it", DEV,
         ["lambda:PutFunctionConcurrency", "lambda:DeleteFunctionConcurrency", "lambda:UpdateFunctionConfiguration", "lambda:UpdateFunctionCode", "lambda:PutFunctionEventInvokeConfig"], [w.guard_fn, w.issuer_fn], {}, "all", False),
        ("mute: a developer cannot disable or retarget the rule", DEV, ["events:DisableRule", "events:RemoveTargets", "events:PutTargets"], [w.rule], {}, "all", False),
        # Issue 11: the state-change queue and the event source mapping.
        ("queue: a developer cannot purge the state-change queue, re-police, reconfigure or delete it", DEV,
         ["sqs:PurgeQueue", "sqs:SetQueueAttributes", "sqs:DeleteQueue", "sqs:RemovePermission", "sqs:AddPermission"], [w.state_queue], {}, "all", False),
        ("queue: the queue's own policy keeps an AdministratorAccess role from purging or re-policing it, without the SCP", ADM,
         ["sqs:PurgeQueue", "sqs:SetQueueAttributes", "sqs:DeleteQueue", "sqs:AddPermission"], [w.state_queue], {}, "resource", False),
        ("queue: a developer cannot disable the guard's event source mapping, delete it or add one", DEV,
         ["lambda:UpdateEventSourceMapping", "lambda:DeleteEventSourceMapping", "lambda:CreateEventSourceMapping"], [w.mapping, "*"],
         {"lambda:FunctionArn": w.guard_fn}, "all", False),
        ("queue: only EventBridge's rule can send to the queue: no developer", DEV, ["sqs:SendMessage"], [w.state_queue], {}, "all", False),
        ("queue: only EventBridge's rule can send to the queue: its own policy refuses an AdministratorAccess role without the SCP", ADM,
         ["sqs:SendMessage"], [w.state_queue], {}, "resource", False),
        ("queue: the SCP alone keeps a developer from purging, re-policing or deleting the state-change queue, or sending or taking its messages", DEV,
         ["sqs:PurgeQueue", "sqs:SetQueueAttributes", "sqs:DeleteQueue", "sqs:RemovePermission", "sqs:AddPermission",
          "sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"], [w.state_queue], {}, "scp", False),
        ("queue: a developer cannot take, hide or hand back state changes", DEV,
         ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"], [w.state_queue], {}, "all", False),
        ("queue: the queue's own policy keeps an AdministratorAccess role from draining it, without the SCP", ADM,
         ["sqs:ReceiveMessage", "sqs:DeleteMessage"], [w.state_queue, w.queue], {}, "resource", False),
        ("queue: the guard's role takes, deletes and hands back state changes", GRD,
         ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"], [w.state_queue], {}, "all", True),
        ("queue: the guard's role reaches no other queue's messages", GRD, ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"], [w.queue], {}, "all", False),
        ("queue: the admin re-drives the failure queue to the state-change queue", A,
         ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:StartMessageMoveTask"], [w.queue], {}, "all", True),
        ("queue: the admin sends to the state-change queue (the re-drive's destination)", A, ["sqs:SendMessage"], [w.state_queue], {}, "all", True),
        ("queue: the admin manages the guard's event source mapping", A, ["lambda:UpdateEventSourceMapping", "lambda:DeleteEventSourceMapping"],
         [w.mapping], {"lambda:FunctionArn": w.guard_fn}, "all", True),
        ("queue (control): a developer still manages event source mappings of their own functions", DEV,
         ["lambda:UpdateEventSourceMapping", "lambda:DeleteEventSourceMapping", "lambda:CreateEventSourceMapping"], [w.mapping],
         {"lambda:FunctionArn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:my-app"}, "all", True),
        ("mute: the admin deletes an alarm and unsubscribes", A, ["cloudwatch:DeleteAlarms", "sns:Unsubscribe"], w.alarms[:1] + [w.subscription], {}, "all", True),
        ("mute (control): a developer still manages alarms of their own", DEV, ["cloudwatch:DeleteAlarms"], [f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:my-app-5xx"], {}, "all", True),
        ("mute (control): without the SCP the developer could delete the alarms", DEV, ["cloudwatch:DeleteAlarms"], w.alarms[:1], {}, "none", True),
        # 11. The issuer's table access.
        ("table: the issuer's role writes its own items", ISS, ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:GetItem"],
         [w.table], {"dynamodb:LeadingKeys": ["pw#0123"]}, "all", True),
        *[(f"table: the issuer's role writes {p} items", ISS, ["dynamodb:PutItem"], [w.table], {"dynamodb:LeadingKeys": [p + "x"]}, "all", True)
          for p in ("trigger#", "rate#", "owner#")],
        ("table: the issuer's role cannot reach verdicts or anything else", ISS,
         ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:GetItem"], [w.table],
         {"dynamodb:LeadingKeys": ["verdict#i-0123456789abcdef0@1700000000"]}, "all", False),
        ("table: the issuer's role cannot reach meta items", ISS, ["dynamodb:PutItem", "dynamodb:GetItem"], [w.table], {"dynamodb:LeadingKeys": ["meta#activation"]}, "all", False),
        ("table: the issuer's role reads its passwords in one batch", ISS, ["dynamodb:BatchGetItem"], [w.table], {"dynamodb:LeadingKeys": ["pw#0123", "pw#4567"]}, "all", True),
        ("table: the issuer's role cannot batch-read a verdict with its passwords", ISS, ["dynamodb:BatchGetItem"], [w.table],
         {"dynamodb:LeadingKeys": ["pw#0123", "verdict#i-0123456789abcdef0@1700000000"]}, "all", False),
        ("table: the issuer's role queries no index", ISS, ["dynamodb:Query"], [f"{w.table}/index/by-owner", f"{w.table}/index/alerts-due"], {}, "all", False),
        ("table: the guard's role queries the alerts-due index", GRD,
         ["dynamodb:Query"], [f"{w.table}/index/alerts-due"], {}, "all", True),
        ("table: the guard's role describes the table and withdraws a verdict", GRD, ["dynamodb:DescribeTable", "dynamodb:DeleteItem"], [w.table],
         {"dynamodb:LeadingKeys": ["verdict#i-0123456789abcdef0@1700000000"]}, "all", True),
        ("table: the guard's role deletes no password", GRD, ["dynamodb:DeleteItem"], [w.table], {"dynamodb:LeadingKeys": ["pw#0123"]}, "all", False),
        # 12. Exemptions through a service.
        ("exempt: a developer cannot tag an instance exempt or un-guard it", DEV, ["ec2:CreateTags", "ec2:DeleteTags"], [w.instance],
         {"aws:TagKeys": ["ec2pass:guard"]}, "all", False),
        ("exempt: a developer cannot launch with the exemption tag", DEV, ["ec2:RunInstances", "ec2:CreateTags"], [w.instance], {**exempt, "ec2:CreateAction": "RunInstances"}, "all", False),
        ("exempt: a developer cannot launch a fleet or Spot instances with it", DEV, ["ec2:CreateFleet", "ec2:RequestSpotFleet", "ec2:RequestSpotInstances"],
         [f"arn:aws:ec2:{REGION}:{ACCOUNT}:fleet/fleet-0123", f"arn:aws:ec2:{REGION}:{ACCOUNT}:spot-fleet-request/sfr-0123"], exempt, "all", False),
        ("exempt: a developer cannot give a group the exemption tag to propagate", DEV,
         ["autoscaling:CreateAutoScalingGroup", "autoscaling:CreateOrUpdateTags", "autoscaling:DeleteTags"], [w.group + "anything"], exempt, "all", False),
        ("exempt: a developer cannot change an allow-listed group or attach to it", DEV,
         ["autoscaling:CreateAutoScalingGroup", "autoscaling:UpdateAutoScalingGroup", "autoscaling:DeleteAutoScalingGroup", "autoscaling:AttachInstances"], [w.group + "web"], {}, "all", False),
        ("exempt: a developer cannot change an allow-listed group's launch template", DEV,
         ["ec2:CreateLaunchTemplateVersion", "ec2:ModifyLaunchTemplate"], [w.launch_template], {}, "all", False),
        ("exempt: a developer cannot detach an instance from a group", DEV, ["autoscaling:DetachInstances"], [w.group + "anything"], {}, "all", False),
        ("exempt (control): a developer launches and runs groups of their own", DEV,
         ["ec2:RunInstances", "autoscaling:CreateAutoScalingGroup", "autoscaling:UpdateAutoScalingGroup"], [w.instance, w.group + "my-app"], {"aws:TagKeys": ["Name"]}, "all", True),
        ("exempt: the admin tags an instance exempt", A, ["ec2:CreateTags"], [w.instance], exempt, "all", True),
        # 13. Regions.
        ("regions: a developer cannot launch or start compute outside the guarded regions", DEV,
         ["ec2:RunInstances", "ec2:StartInstances", "ec2:CreateFleet", "ec2:RequestSpotFleet", "ec2:RequestSpotInstances",
          "autoscaling:CreateAutoScalingGroup", "autoscaling:UpdateAutoScalingGroup", "eks:CreateNodegroup", "batch:CreateComputeEnvironment"],
         [w.instance.replace(REGION, "eu-central-1")], {"aws:RequestedRegion": "eu-central-1"}, "all", False),
        ("regions: a developer starts instances in a guarded region", DEV, ["ec2:StartInstances"], [w.instance], {}, "all", True),
        ("regions: the admin is not held to the guarded regions", A, ["ec2:RunInstances"], [w.instance.replace(REGION, "eu-central-1")],
         {"aws:RequestedRegion": "eu-central-1"}, "all", True),
    ]
    return c


def evaluate_claims(template, policies):
    """[(name, holds, message)] for every claim."""
    try:
        w = World(template, policies)
    except ImportError as e:
        return [("the simulator", False, f"Principal Mapper is not installed ({e}): run make venv (dev/requirements.txt)")]
    except Exception as e:
        return [("the simulator's world", False, f"the template or the policies cannot be resolved for the simulator: {e!r}")]
    results = []
    for name, who, acts, resources, context, layers, expected in claims(w):
        wrong = [(a, res) for a in acts for res in resources if w.allowed(who, a, res, context, layers) != expected]
        if wrong:
            a, res = wrong[0]
            results.append((name, False, f"policy claim '{name}' does not hold: Principal Mapper says {who} "
                                         f"{'cannot' if expected else 'can'} {a} on {res}"
                                         + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else "")))
        else:
            results.append((name, True, f"{len(acts) * len(resources)} request(s)"))
    return results


# ---------------------------------------------------------------------------------------------
# Settings: the code's variables, the template's environment, the documentation.
# ---------------------------------------------------------------------------------------------

SAMCONFIG = ROOT / "infra" / "samconfig.toml"


def samconfig_matches(template):
    """Named roles deploy only with CAPABILITY_NAMED_IAM, which `make deploy` takes from samconfig."""
    import tomllib

    named = any(r.get("Type") == "AWS::IAM::Role" and "RoleName" in r.get("Properties", {})
                for r in template.get("Resources", {}).values())
    caps = tomllib.loads(SAMCONFIG.read_text()).get("default", {}).get("deploy", {}).get("parameters", {}).get("capabilities", "")
    if named and "CAPABILITY_NAMED_IAM" not in str(caps):
        return ["infra/samconfig.toml: the roles have names, so the deploy needs capabilities = \"CAPABILITY_NAMED_IAM\""]
    return []


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
    "EC2PASS_SLACK_SIGNING_SECRET_ARN": "the stack's own secret",
    "EC2PASS_STATE_CHANGE_QUEUE_URL": "the stack's own state-change queue",
}


def settings_read(function):
    """The EC2PASS_* variables that `impl IssuerConfig` or `impl GuardConfig` reads, from the source.
    Retired variables, which the code names only to refuse them, do not count."""
    source = CONFIG_RS.read_text()

    def block(opening):
        start = source.index(opening)
        return source[start:source.find("\n}\n", start)]

    body = block(f"impl {function} {{")
    # Module-level readers such as `table_name(env)` count for the impl that calls them.
    for helper in re.findall(r"^(?:pub )?fn (\w+)\(env: &Env", source, re.M):
        if f"{helper}(env" in body:
            body += block(f"fn {helper}(")
    return set(re.findall(r'"(EC2PASS_[A-Z_]+)"', body)) - set(RETIRED)


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


def check(template, path=None, policies=None, lint=True):
    """All findings for a template (parsed) and the policies, linting the file at `path` or a
    temporary copy (lint=False: everything but cfn-lint and the SAM transform, the slow part)."""
    policies = policies if policies is not None else load_policies()
    findings = []
    findings += policy_invariants(template, policies)
    if lint:
        findings += lint_and_translate(template, path)
    try:
        findings += invariants(template)
    except Exception as e:  # a broken copy can break the checks' own assumptions
        findings.append(f"invariants: the template cannot be read: {e!r}")
    findings += local_table_matches(template)
    findings += samconfig_matches(template)
    findings += settings_match(template)
    try:
        world = World(template, policies)
        stack_policies = {f"{who} role policy {i}": d for who, docs in world.identity.items() for i, d in enumerate(docs)}
        stack_policies.update({f"resource policy of {arn}": d for arn, d in world.resource_policies.items()})
    except Exception:
        stack_policies = {}
    findings += parliament_findings(policies, stack_policies)
    findings += [message for _, holds, message in evaluate_claims(template, policies) if not holds]
    return findings


# ---------------------------------------------------------------------------------------------
# Broken copies: each must be caught by a finding the intact files do not have.
# ---------------------------------------------------------------------------------------------

def broken_copies(template):
    """Deliberately broken templates, each of which the checks must catch."""

    def role_statements(t, role):
        return [st for doc in role_policies(t, role) for st in doc["Statement"]]

    def guard_statements(t):
        return role_statements(t, "GuardRole")

    def issuer_statement(t, sid):
        return next(st for st in role_statements(t, "IssuerRole") if st.get("Sid") == sid)

    def key_statement(t, sid):
        return next(st for st in t["Resources"]["SigningSecretKey"]["Properties"]["KeyPolicy"]["Statement"] if st["Sid"] == sid)

    def widen(t):
        guard_statements(t)[1]["Action"] = ["dynamodb:*"]

    def drop_null(t):
        for st in guard_statements(t):
            if "ec2:DeleteTags" in actions(st):
                st["Condition"].pop("Null", None)

    def any_value(t):
        for st in guard_statements(t):
            cond = st.get("Condition", {})
            if "ec2:DeleteTags" in actions(st):
                cond["ForAnyValue:StringEquals"] = cond.pop("ForAllValues:StringEquals")

    def misspell_arch(t):
        t["Globals"]["Function"]["Architectures"] = ["arm46"]

    def dangling_getatt(t):
        guard_statements(t)[0]["Resource"] = {"Fn::GetAtt": ["Tabel", "Arn"]}

    def bad_enum(t):
        t["Resources"]["Table"]["Properties"]["BillingMode"] = "ON_DEMAND"

    def issuer_may_stop(t):
        issuer_statement(t, "ShowInstance")["Action"].append("ec2:StopInstances")

    def url_with_iam(t):
        t["Resources"]["IssuerFunction"]["Properties"]["FunctionUrlConfig"]["AuthType"] = "AWS_IAM"

    def managed_topic_key(t):
        t["Resources"]["AlertTopic"]["Properties"]["KmsMasterKeyId"] = "alias/aws/sns"

    def bad_alarm_operator(t):
        t["Resources"]["StateChangeQueueAgeAlarm"]["Properties"]["ComparisonOperator"] = "GreaterThan"

    def dangling_output_getatt(t):
        t["Outputs"]["SlackRequestUrl"]["Value"] = {"Fn::GetAtt": ["IssuerFunctionUrl", "Url"]}

    def forget_a_setting(t):
        t["Resources"]["GuardFunction"]["Properties"]["Environment"]["Variables"].pop("EC2PASS_FAIL_MODE")

    # 1. The secret.
    def secret_in_environment(t):
        t["Parameters"]["SlackSigningSecret"] = {"Type": "String", "NoEcho": True, "Default": ""}
        t["Resources"]["IssuerFunction"]["Properties"]["Environment"]["Variables"]["EC2PASS_SLACK_SIGNING_SECRET"] = {"Ref": "SlackSigningSecret"}

    def secret_value_in_the_template(t):
        t["Resources"]["SigningSecret"]["Properties"]["SecretString"] = "8f742231b10e8888abcd99yyyzzz85a5"

    def secret_under_the_default_key(t):
        t["Resources"]["SigningSecret"]["Properties"].pop("KmsKeyId")

    def account_may_decrypt(t):
        key_statement(t, "AccountAdministersButCannotDecrypt")["Action"] = "kms:*"

    def key_locks_out_the_admin(t):
        st = t["Resources"]["SigningSecretKey"]["Properties"]["KeyPolicy"]["Statement"]
        st[:] = [s for s in st if s["Sid"] != "AdminManagesTheKey"]

    def issuer_decrypts_directly(t):
        key_statement(t, "IssuerDecryptsThroughSecretsManager").pop("Condition")

    def secret_policy_lets_everyone_read(t):
        rp = t["Resources"]["SigningSecretPolicy"]["Properties"]["ResourcePolicy"]["Statement"]
        rp[:] = [s for s in rp if s["Sid"] != "OnlyTheIssuerAndTheAdminRead"]

    def secret_policy_lets_anyone_repolicy(t):
        rp = t["Resources"]["SigningSecretPolicy"]["Properties"]["ResourcePolicy"]["Statement"]
        next(s for s in rp if s["Sid"] == "OnlyTheAdminChangesIt")["Action"].remove("secretsmanager:PutResourcePolicy")

    def secret_policy_misspells_an_action(t):
        # A Deny of an action that does not exist denies nothing.
        rp = t["Resources"]["SigningSecretPolicy"]["Properties"]["ResourcePolicy"]["Statement"]
        next(s for s in rp if s["Sid"] == "OnlyTheAdminChangesIt")["Action"].append("secretsmanager:PutSecretValues")

    def guard_reads_the_secret(t):
        t["Resources"]["GuardRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"].append(
            {"Sid": "Peek", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": {"Ref": "SigningSecret"}})

    # 6. Carve-outs.
    def role_by_path(t):
        props = t["Resources"]["IssuerRole"]["Properties"]
        props.pop("RoleName")
        props["Path"] = "/ec2pass/"

    def role_trusts_ec2(t):
        t["Resources"]["GuardRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] = {"Service": ["lambda.amazonaws.com", "ec2.amazonaws.com"]}

    # 9. Starvation.
    def guard_without_reserved_concurrency(t):
        t["Resources"]["GuardFunction"]["Properties"].pop("ReservedConcurrentExecutions")

    def issuer_uncapped(t):
        t["Resources"]["IssuerFunction"]["Properties"].pop("ReservedConcurrentExecutions")

    def forget_the_queue_age_alarm(t):
        t["Resources"].pop("StateChangeQueueAgeAlarm")

    def queue_age_alarm_on_the_wrong_queue(t):
        t["Resources"]["StateChangeQueueAgeAlarm"]["Properties"]["Dimensions"][0]["Value"] = {"Fn::GetAtt": ["GuardFailures", "QueueName"]}

    def event_age_alarm_instead(t):
        props = t["Resources"]["StateChangeQueueAgeAlarm"]["Properties"]
        props.update({"Namespace": "AWS/Lambda", "MetricName": "AsyncEventAge", "Unit": "Milliseconds", "Threshold": 60000,
                      "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": "GuardFunction"}}]})

    def forget_the_rule_failures_alarm(t):
        t["Resources"].pop("StateChangeRuleFailuresAlarm")

    def forget_the_throttles_alarm(t):
        t["Resources"].pop("GuardThrottlesAlarm")

    # 7. Muting: names the SCP can match.
    def alarm_without_a_name(t):
        t["Resources"]["GuardThrottlesAlarm"]["Properties"].pop("AlarmName")

    def queue_without_a_name(t):
        t["Resources"]["GuardFailures"]["Properties"].pop("QueueName")

    # 11. The issuer's table access.
    def issuer_reaches_verdicts(t):
        issuer_statement(t, "OwnItemsOnly")["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"].append("verdict#*")

    def issuer_leading_keys_without_null(t):
        issuer_statement(t, "OwnItemsOnly")["Condition"].pop("Null")

    def issuer_unrestricted(t):
        issuer_statement(t, "OwnItemsOnly").pop("Condition")

    # 5. Defaults.
    def alert_only_by_default(t):
        t["Parameters"]["UnstoppableAction"]["Default"] = "alert-only"

    def every_group_exempt_by_default(t):
        t["Parameters"]["ExemptAutoScalingGroups"]["Default"] = "*"

    def stop_protection_wins_by_default(t):
        t["Parameters"]["ClearStopProtection"]["Default"] = "false"

    def terminate_without_clearing_protection(t):
        t["Conditions"]["ModifiesInstances"] = {"Condition": "ClearsStopProtection"}

    # The guard's new table access.
    def guard_cannot_find_owed_alerts(t):
        sts = t["Resources"]["GuardRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        sts[:] = [s for s in sts if s.get("Sid") != "AlertsNotYetSent"]

    def table_without_the_alerts_index(t):
        props = t["Resources"]["Table"]["Properties"]
        props["GlobalSecondaryIndexes"] = [i for i in props["GlobalSecondaryIndexes"] if i["IndexName"] != "alerts-due"]

    # Issue 11: state changes through the queue, in batches.
    def queue_statements(t, logical):
        return next(r for r in t["Resources"].values() if r.get("Type") == "AWS::SQS::QueuePolicy"
                    and r["Properties"]["Queues"] == [{"Ref": logical}])["Properties"]["PolicyDocument"]["Statement"]

    def drop_queue_statement(t, logical, sid):
        sts = queue_statements(t, logical)
        sts[:] = [s for s in sts if s.get("Sid") != sid]

    def sqs_event(t):
        return next(e["Properties"] for e in t["Resources"]["GuardFunction"]["Properties"]["Events"].values() if e["Type"] == "SQS")

    def queue_open_to_all_senders(t):
        drop_queue_statement(t, "StateChangeQueue", "NobodyElseSends")

    def queue_deny_refuses_the_rule_too(t):
        # Without the aws:SourceArn carve-out the Deny binds EventBridge's deliveries (they carry no principal ARN).
        st = next(s for s in queue_statements(t, "StateChangeQueue") if s["Sid"] == "NobodyElseSends")
        st["Condition"]["ArnNotEquals"].pop("aws:SourceArn")

    def queue_refuses_the_admins_redrive(t):
        st = next(s for s in queue_statements(t, "StateChangeQueue") if s["Sid"] == "NobodyElseSends")
        st["Condition"]["ArnNotEquals"].pop("aws:PrincipalArn")

    def queue_policy_lets_anyone_purge(t):
        st = next(s for s in queue_statements(t, "StateChangeQueue") if s["Sid"] == "OnlyTheAdminManagesIt")
        st["Action"].remove("sqs:PurgeQueue")

    def queue_drainable_by_anyone(t):
        drop_queue_statement(t, "StateChangeQueue", "OnlyTheGuardTakesThem")

    def queue_refuses_the_rule(t):
        drop_queue_statement(t, "StateChangeQueue", "TheRuleSends")

    def failures_refuse_the_rule(t):
        drop_queue_statement(t, "GuardFailures", "TheRuleSendsWhatItCannotDeliver")

    def failures_purgeable_without_the_scp(t):
        drop_queue_statement(t, "GuardFailures", "OnlyTheAdminManagesOrDrainsIt")

    def guard_cannot_change_visibility(t):
        next(st for st in guard_statements(t) if st.get("Sid") == "TakeStateChangesFromTheQueue")["Action"].remove("sqs:ChangeMessageVisibility")

    def guard_takes_from_every_queue(t):
        next(st for st in guard_statements(t) if st.get("Sid") == "TakeStateChangesFromTheQueue")["Resource"] = "*"

    def esm_without_partial_batch_responses(t):
        sqs_event(t).pop("FunctionResponseTypes")

    def esm_waits_to_fill_a_batch(t):
        sqs_event(t)["MaximumBatchingWindowInSeconds"] = 30

    def esm_without_maximum_concurrency(t):
        sqs_event(t).pop("ScalingConfig")

    def esm_concurrency_below_the_minimum(t):
        t["Parameters"]["GuardQueueConcurrency"]["MinValue"] = 1

    def queue_concurrency_above_the_reservation(t):
        t["Parameters"]["GuardQueueConcurrency"]["Default"] = 50

    def queue_without_dlq(t):
        t["Resources"]["StateChangeQueue"]["Properties"].pop("RedrivePolicy")

    def queue_visibility_shorter_than_six_timeouts(t):
        t["Resources"]["StateChangeQueue"]["Properties"]["VisibilityTimeout"] = 60

    def queue_under_the_aws_managed_key(t):
        props = t["Resources"]["StateChangeQueue"]["Properties"]
        props.pop("SqsManagedSseEnabled")
        props["KmsMasterKeyId"] = "alias/aws/sqs"

    def state_change_queue_without_a_name(t):
        t["Resources"]["StateChangeQueue"]["Properties"].pop("QueueName")

    def guard_invoked_per_state_change_again(t):
        t["Resources"]["GuardFunction"]["Properties"]["Events"]["StateChange"] = {"Type": "EventBridgeRule", "Properties": {
            "Pattern": t["Resources"]["GuardFunctionStateChange"]["Properties"]["EventPattern"]}}

    def rule_without_a_dlq(t):
        t["Resources"]["GuardFunctionStateChange"]["Properties"]["Targets"][0].pop("DeadLetterConfig")

    def rule_retries_for_a_day(t):
        t["Resources"]["GuardFunctionStateChange"]["Properties"]["Targets"][0]["RetryPolicy"]["MaximumEventAgeInSeconds"] = 86400

    def guard_forgets_its_queue(t):
        t["Resources"]["GuardFunction"]["Properties"]["Environment"]["Variables"].pop("EC2PASS_STATE_CHANGE_QUEUE_URL")

    for breaker in (widen, drop_null, any_value, misspell_arch, dangling_getatt, bad_enum, issuer_may_stop, url_with_iam,
                    managed_topic_key, forget_a_setting, bad_alarm_operator, dangling_output_getatt,
                    secret_in_environment, secret_value_in_the_template, secret_under_the_default_key, account_may_decrypt, key_locks_out_the_admin,
                    issuer_decrypts_directly, secret_policy_lets_everyone_read, secret_policy_lets_anyone_repolicy, secret_policy_misspells_an_action,
                    guard_reads_the_secret, role_by_path, role_trusts_ec2, guard_without_reserved_concurrency,
                    issuer_uncapped, forget_the_queue_age_alarm, queue_age_alarm_on_the_wrong_queue, event_age_alarm_instead,
                    forget_the_rule_failures_alarm, forget_the_throttles_alarm,
                    alarm_without_a_name, queue_without_a_name, issuer_reaches_verdicts, issuer_leading_keys_without_null,
                    issuer_unrestricted, alert_only_by_default, every_group_exempt_by_default, stop_protection_wins_by_default,
                    terminate_without_clearing_protection, guard_cannot_find_owed_alerts, table_without_the_alerts_index,
                    queue_open_to_all_senders, queue_deny_refuses_the_rule_too, queue_refuses_the_admins_redrive, queue_policy_lets_anyone_purge,
                    queue_drainable_by_anyone, queue_refuses_the_rule, failures_refuse_the_rule, failures_purgeable_without_the_scp,
                    guard_cannot_change_visibility, guard_takes_from_every_queue, esm_without_partial_batch_responses,
                    esm_waits_to_fill_a_batch, esm_without_maximum_concurrency, esm_concurrency_below_the_minimum,
                    queue_concurrency_above_the_reservation, queue_without_dlq, queue_visibility_shorter_than_six_timeouts,
                    queue_under_the_aws_managed_key, state_change_queue_without_a_name, guard_invoked_per_state_change_again,
                    rule_without_a_dlq, rule_retries_for_a_day, guard_forgets_its_queue):
        broken = copy.deepcopy(template)
        breaker(broken)
        yield breaker.__name__, broken


def broken_policies():
    """Deliberately broken example policies, each of which the checks must catch."""
    intact = load_policies()

    def sid(p, name):
        return next(st for doc in p.values() for st in doc["Statement"] if st.get("Sid") == name)

    def drop_action(name, action):
        def breaker(p):
            sid(p, name)["Action"].remove(action)
        breaker.__name__ = f"scp_{name}_without_{action.split(':')[1]}"
        return breaker

    def drop_statement(name):
        def breaker(p):
            for doc in p.values():
                doc["Statement"] = [st for st in doc["Statement"] if st.get("Sid") != name]
        breaker.__name__ = f"scp_without_{name}"
        return breaker

    def all_values_in_deny(p):
        cond = sid(p, "NoDeletingTheAuthTag")["Condition"]
        cond["ForAllValues:StringEquals"] = cond.pop("ForAnyValue:StringEquals")

    def forget_delete_all(p):
        drop_statement("NoDeletingEveryTag")(p)

    def scp_allows_concurrency_zero(p):
        sid(p, "KeepTheFunctions")["Action"].remove("lambda:PutFunctionConcurrency")

    def scp_forgets_the_exempt_tag(p):
        drop_statement("KeepTheExemptionTags")(p)

    def auth_tag_policy_exempts_the_path(p):
        for st in p["protect-auth-tag.json"]["Statement"]:
            st["Condition"]["ArnNotLike"]["aws:PrincipalArn"] = "arn:aws:iam::*:role/ec2pass/*"

    def table_carve_out_by_path(p):
        sid(p, "KeepTheTable")["Condition"]["ArnNotLike"]["aws:PrincipalArn"].append("arn:aws:iam::*:role/ec2pass/*")

    def scp_denies_the_function_url(p):
        sid(p, "NoInvokingOrReadingTheFunctions")["Action"].append("lambda:InvokeFunctionUrl")

    def regions_scp_binds_the_admin(p):
        sid(p, "NoComputeOutsideTheGuardedRegions")["Condition"].pop("ArnNotLike")

    def scp_too_long(p):
        sid(p, "KeepTheTable")["Action"] += [f"dynamodb:Padding{i:04d}" for i in range(60)]

    def misspelled_action(p):
        sid(p, "KeepTheAlarms")["Action"].append("cloudwatch:DeleteAlarm")

    def esm_deny_on_the_mapping_not_the_function(p):
        # Update and Delete name the mapping, not the function: a deny on function:ec2pass-* misses them.
        st = sid(p, "KeepTheEventSourceMapping")
        st["Resource"] = "arn:aws:lambda:*:*:function:ec2pass-*"
        st["Condition"].pop("ArnLike")

    def esm_deny_on_a_key_aws_never_sets(p):
        sid(p, "KeepTheEventSourceMapping")["Condition"]["ArnLike"] = {"lambda:FunctionName": "ec2pass-*"}

    def scp_starves_the_guard(p):
        # Today's failure-queue statement, stretched over every ec2pass-* queue, would deny the guard its own batches.
        sid(p, "OnlyTheGuardTakesStateChanges")["Condition"]["ArnNotLike"]["aws:PrincipalArn"] = "arn:aws:iam::*:role/ec2pass-admin"

    def scp_queue_statement_misses_the_state_change_queue(p):
        sid(p, "OnlyTheGuardTakesStateChanges")["Resource"] = "arn:aws:sqs:*:*:ec2pass-*state-change"

    def condition_aws_never_sets(p):
        # DetachInstances carries no instance types: a Deny that needs them never matches.
        sid(p, "NoDetachingFromGroups")["Condition"]["StringLike"] = {"autoscaling:InstanceTypes": "*"}

    breakers = [
        all_values_in_deny, forget_delete_all, scp_allows_concurrency_zero, scp_forgets_the_exempt_tag,
        # 1. the secret, and the functions' configuration
        drop_statement("OnlyTheIssuerAndTheAdminRead"), drop_statement("OnlyTheIssuerAndTheAdminDecrypt"),
        drop_action("NoInvokingOrReadingTheFunctions", "lambda:GetFunctionConfiguration"),
        # 4. forged events
        drop_action("NoInvokingOrReadingTheFunctions", "lambda:InvokeFunction"),
        drop_action("NoInvokingOrReadingTheFunctions", "lambda:InvokeAsync"), scp_denies_the_function_url,
        # 6. carve-outs
        auth_tag_policy_exempts_the_path, table_carve_out_by_path,
        drop_action("KeepTheRoles", "iam:PassRole"), drop_action("KeepTheRoles", "iam:CreateRole"),
        drop_action("KeepTheRoles", "iam:UpdateAssumeRolePolicy"), drop_statement("NoEc2passRoleTagElsewhere"),
        drop_action("KeepTheTable", "dynamodb:PutResourcePolicy"), drop_action("KeepTheTable", "dynamodb:DeleteResourcePolicy"),
        # 7. muting
        drop_action("KeepTheSubscriptions", "sns:Unsubscribe"), drop_action("KeepTheSubscriptions", "sns:SetSubscriptionAttributes"),
        drop_action("KeepTheAlertTopic", "sns:SetTopicAttributes"), drop_action("KeepTheAlertTopic", "sns:DeleteTopic"),
        drop_action("KeepTheAlertTopic", "sns:RemovePermission"), drop_action("KeepTheAlertTopic", "sns:AddPermission"),
        drop_action("KeepTheAlarms", "cloudwatch:DeleteAlarms"), drop_action("KeepTheAlarms", "cloudwatch:DisableAlarmActions"),
        drop_action("KeepTheAlarms", "cloudwatch:PutMetricAlarm"), drop_action("KeepTheAlarms", "cloudwatch:SetAlarmState"),
        drop_action("KeepTheQueues", "sqs:DeleteQueue"), drop_action("KeepTheQueues", "sqs:PurgeQueue"),
        drop_action("KeepTheQueues", "sqs:SetQueueAttributes"), drop_action("KeepTheQueues", "sqs:RemovePermission"),
        drop_action("KeepTheQueues", "sqs:AddPermission"), drop_action("KeepTheFailureQueue", "sqs:ReceiveMessage"),
        drop_action("KeepTheFailureQueue", "sqs:DeleteMessage"), drop_action("KeepTheKeys", "kms:DisableKey"),
        # 11. switching the guard off through its queue
        drop_action("KeepTheEventSourceMapping", "lambda:DeleteEventSourceMapping"),
        drop_action("KeepTheEventSourceMapping", "lambda:UpdateEventSourceMapping"),
        drop_action("KeepTheEventSourceMapping", "lambda:CreateEventSourceMapping"),
        esm_deny_on_the_mapping_not_the_function, esm_deny_on_a_key_aws_never_sets,
        drop_action("OnlyTheGuardTakesStateChanges", "sqs:ReceiveMessage"), drop_action("OnlyTheGuardTakesStateChanges", "sqs:SendMessage"),
        scp_starves_the_guard, scp_queue_statement_misses_the_state_change_queue,
        # 9. starvation: the issuer's concurrency too
        drop_action("KeepTheFunctions", "lambda:DeleteFunctionConcurrency"),
        # 12. exemptions through a service
        drop_action("NoExemptionTagsAtLaunch", "ec2:RunInstances"), drop_action("NoExemptionTagsAtLaunch", "ec2:CreateFleet"),
        drop_action("NoExemptionTagsAtLaunch", "ec2:RequestSpotFleet"),
        drop_action("NoExemptionTagsOnGroups", "autoscaling:CreateAutoScalingGroup"),
        drop_action("NoExemptionTagsOnGroups", "autoscaling:CreateOrUpdateTags"),
        drop_statement("KeepTheAllowListedGroups"), drop_statement("KeepTheirLaunchTemplates"), drop_statement("NoDetachingFromGroups"),
        # 13. regions
        drop_action("NoComputeOutsideTheGuardedRegions", "ec2:StartInstances"),
        drop_action("NoComputeOutsideTheGuardedRegions", "autoscaling:CreateAutoScalingGroup"),
        regions_scp_binds_the_admin,
        # shape
        scp_too_long, misspelled_action, condition_aws_never_sets,
    ]
    for breaker in breakers:
        broken = copy.deepcopy(intact)
        breaker(broken)
        yield breaker.__name__, broken


def quiet_translator_logs():
    """The translator's metrics publisher complains on stderr when nothing publishes them."""
    import logging

    logging.getLogger("samtranslator").setLevel(logging.CRITICAL)


def main(argv):
    quiet_translator_logs()
    template = load_template(TEMPLATE)
    policies = load_policies()
    passed = failed = 0
    findings = check(template, TEMPLATE, policies)
    for f in findings:
        print(f"  {f}")
    if findings:
        failed += 1
        print("FAIL infra/template.yaml and infra/policies")
    else:
        passed += 1
        print("ok   infra/template.yaml and infra/policies: cfn-lint, SAM transform + cfn-lint, invariants, local table, settings, parliament")
    for name, holds, message in evaluate_claims(template, policies):
        if holds:
            passed += 1
            print(f"ok   claim '{name}' (Principal Mapper, {message})")
        else:
            failed += 1
            print(f"FAIL {message}")
    if "--self-test" in argv:
        baseline = set(findings)
        cases = [(n, t, policies) for n, t in broken_copies(template)]
        cases += [(n, template, p) for n, p in broken_policies()]

        def run(case):
            name, broken, pols = case
            # Caught means a finding the intact files do not have. cfn-lint runs only for a copy
            # that nothing quicker catches.
            caught = [f for f in check(broken, policies=pols, lint=False) if f not in baseline]
            return name, caught or [f for f in check(broken, policies=pols) if f not in baseline]

        with ThreadPoolExecutor(max_workers=2) as pool:
            for name, caught in pool.map(run, cases):
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
