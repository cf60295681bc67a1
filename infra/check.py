"""Offline checks of infra/template.yaml (the hub), infra/member.yaml (the spoke),
infra/organization.yaml (the StackSet) and infra/policies/, run by `make test`.

    python infra/check.py                 check the template and the policies; exit 1 on any finding
    python infra/check.py --self-test     also prove that broken copies are caught

Nothing here talks to AWS. Layers, because each one misses what the next one sees:

1. cfn-lint on the SAM template, and on the spoke's and the StackSet's plain CloudFormation.
2. The SAM translator, run offline, and cfn-lint on its CloudFormation output. SAM resources
   hide their real properties from cfn-lint: a bad enum value or a dangling GetAtt inside an
   AWS::Serverless::Function only shows after the transform.
3. Invariants of this product, asserted on the parsed templates, so that an edit that widens a
   permission or drops a safety condition fails the suite. The Organization's (issue 12): the
   single-account deploy is unchanged by default; the hub bus admits only the Organization; the
   spoke's member role carries exactly the hub guard role's EC2 statements, and it and the lookup
   role trust exactly the hub's guard and issuer; the forwarding rule sends the same pattern to
   the hub bus; the StackSet is service-managed, deploys itself to new accounts and passes every
   spoke parameter down. A hub reading its accounts from AWS Organizations (OrganizationUnits)
   gets exactly ListAccountsForParent and ListOrganizationalUnitsForParent on its guard's and
   issuer's roles, and no other hub any Organizations action; the Organization's delegation
   policy (infra/organization.yaml) lets the hub account make exactly those two calls, and is
   made only in a management account for a hub elsewhere. The hub's Rules are evaluated for the
   settings they must accept and refuse.
4. Settings: every EC2PASS_* variable that shared/src/config.rs reads is set by the template from
   a parameter, and docs/configuration.md describes it and names that parameter.
5. The example policies (infra/policies/*.json): their shape (Deny only, exact carve-outs, the
   5,120-character limit of AWS Organizations); and parliament (a maintained IAM policy linter),
   on them and on the stack's own policies, finds no unknown action and no condition key that
   AWS never sets for an action.
6. Policy claims ("only the issuer's role can read the secret", "only the admin can mute the
   alerts", ...), each evaluated by Principal Mapper's local IAM simulator (PyPI principalmapper,
   NCC Group) over the SCPs, the key policies, the secret's resource policy and the roles'
   policies as the template resolves them, against stand-in principals (docs/policies.md); and
   the Organization's claims ("only the hub's guard may assume the member role", "only the
   Organization may put events on the hub bus", "the delegation policy lets the hub account list
   and nothing more", ...), across a hub account, a member account, the management account and
   an outside one.

The follow-ups (issue 13) are invariants of layer 3 and claims of layer 6: the follow-up function
(binary followup of the issuer crate) has exactly GetItem of reply# and pw# items, UpdateItem of
reply# items, Query of the replies-due index, the three SQS actions of its own queue, and
GetSecretValue of the reply key with kms:Decrypt of its key through Secrets Manager, and no other
service's action; the issuer puts reply# items and nothing more of them; the follow-up queue
is subscribed to the alert topic with a verdict filter, admits only that topic, and has a
dead-letter queue with an alarm. The reply URLs are stored sealed: the reply key (ReplyKey,
<stack>-reply-key) exists in every stack, CloudFormation generates its value (64 letters and
digits, no placeholder), it is never rotated, it is under a key of its own (alias
<stack>-reply-key) that only the issuer's and the follow-up roles decrypt, through Secrets Manager;
its resource policy lets exactly those two roles and the admin read it; both functions, and no
other, get its ARN (EC2PASS_REPLY_KEY_SECRET_ARN); the issuer's role reads exactly its secrets. The
SCPs except the follow-up role only from UpdateItem of the table and from reading the bot token
and the reply key (and decrypting their keys). The issuer queries the by-instance index (`status`), and no
other index. The chat options, all off by default and each creating exactly its resources:
MattermostOrigin (a token kept as the signing secret is, and one more reply origin),
SlackBotDirectMessages (a bot token under a key of its own that only the follow-up role reads),
ChannelAlerts (a channel topic under the alert key that only the follow-up role publishes to, and
with both ChatbotSlack... ids a chat channel whose role can do nothing, under AWSDenyAll); their
claims are evaluated with every option on. The Slack app's manifest (infra/slack-app-manifest.yaml)
sends button presses to slack/actions and asks for no scope but commands.

Attribution and response (issue 14) are invariants of layer 3 and claims of layer 6 too: the
attribution function (binary attribution of the guard crate) runs as its own role, which has
exactly PutItem of call# and response# items, UpdateItem of verdict# and response# items, Query of the by-instance index, sns:Publish with the alert key through SNS, the
four SQS actions of its call queue, and DescribeInstances (a hub: AssumeRole of the member
accounts' read-only lookup roles instead); only with Response=on (condition RespondsToCallers)
iam:UpdateAccessKey on the account's users and iam:PutRolePolicy on its roles, with a Deny of
both on the admin, the stack's and every ec2pass* role, the member, forwarding and lookup roles
and the service-linked roles; no other role of the stack has any IAM action. The call rules
match exactly RunInstances and StartInstances from ec2.amazonaws.com (CloudTrail), locally and on
the hub bus, and the spokes forward the same pattern; the call queue admits only those rules,
only the attribution role takes from it, and its maxReceiveCount covers the function's 30
minutes of hand-backs. The trail exists only with CreateTrail=true. The response's claims are
evaluated with every option on.
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
MEMBER_TEMPLATE = ROOT / "infra" / "member.yaml"
ORG_TEMPLATE = ROOT / "infra" / "organization.yaml"
POLICIES = ROOT / "infra" / "policies"
STACK = "ec2pass"
ACCOUNT = "123456789012"
REGION = "us-east-1"
PSEUDO = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"}
# The Organization of the examples: the hub in ACCOUNT, REGION; one member account, guarded in the
# hub's region and one more; an account outside the Organization.
ORG_ID = "o-a1b2c3d4e5"
MEMBER_ACCOUNT = "210987654321"
MEMBER_REGION = "eu-west-1"
OUTSIDER = "999999999999"
OUTSIDE_ORG_ID = "o-z9y8x7w6v5"
# The Organization's management account, where infra/organization.yaml runs (CallAs SELF).
MANAGEMENT_ACCOUNT = "555555555555"
HUB_PARAMS = {"OrganizationId": ORG_ID, "MemberAccounts": f"prod={MEMBER_ACCOUNT},security={ACCOUNT}",
              "GuardedRegions": f"{REGION},{MEMBER_REGION}", "AccountUsers": "prod=U0123ABCD"}
# A hub that reads its member accounts from AWS Organizations: an OU and the root. MemberAccounts
# then only gives aliases.
ORG_UNITS = "ou-ab12-cdefgh34,r-ab12"
HUB_UNITS_PARAMS = {**HUB_PARAMS, "OrganizationUnits": ORG_UNITS}
# The only Organizations calls a hub makes (shared/src/org.rs, OrgTree), on its guard's and its
# issuer's roles and in the delegation policy alike.
ORG_READS = ["organizations:ListAccountsForParent", "organizations:ListOrganizationalUnitsForParent"]
SPOKE_PARAMS = {"HubAccountId": ACCOUNT, "HubRegion": REGION, "OrganizationId": ORG_ID}
ORG_PARAMS = {**SPOKE_PARAMS, "MemberTemplateUrl": "https://example-bucket.s3.us-east-1.amazonaws.com/ec2pass/member-0123abc.yaml",
              "OrganizationalUnitIds": "ou-ab12-cdefgh34", "GuardedRegions": f"{REGION},{MEMBER_REGION}"}


def pseudo(account=ACCOUNT, region=REGION):
    return {"AWS::Region": region, "AWS::AccountId": account, "AWS::Partition": "aws"}
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


def lint_and_translate(template, path=None, plain=()):
    """cfn-lint on the template and on its SAM transform, and on each plain CloudFormation
    template of `plain` ((label, template, path or None): the spoke, the StackSet), in one run;
    cached, since most broken copies change only the policies."""
    key = json.dumps([template, [(label, t) for label, t, _ in plain]], sort_keys=True)
    if key in _LINTED:
        return _LINTED[key]
    findings = []
    with tempfile.TemporaryDirectory() as tmp:
        if path is None:
            path = Path(tmp) / "template.json"
            path.write_text(json.dumps(template))
        paths = [path]
        others = []
        for i, (label, t, p) in enumerate(plain):
            if p is None:
                p = Path(tmp) / f"plain-{i}.json"
                p.write_text(json.dumps(t))
            others.append((label, p))
        paths += [p for _, p in others]
        translated = None
        try:
            translated = Path(tmp) / "translated.json"
            translated.write_text(json.dumps(translate(template)))
            paths.append(translated)
        except Exception as e:  # the translator raises on invalid SAM
            translated = None
            findings.append(f"SAM transform: {e}")
        linted = cfn_lint_many(paths)
        findings += [f"cfn-lint: {f}" for f in linted[str(path)]]
        for label, p in others:
            findings += [f"cfn-lint ({label}): {f}" for f in linted[str(p)]]
        if translated is not None:
            findings += [f"cfn-lint after SAM transform: {f}" for f in linted[str(translated)]]
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
    "AWS::Events::Rule": "Name",
    "AWS::Events::EventBus": "Name",
    "AWS::CloudFormation::StackSet": "StackSetName",
    "AWS::Chatbot::SlackChannelConfiguration": "ConfigurationName",
    "AWS::S3::Bucket": "BucketName",
    "AWS::CloudTrail::Trail": "TrailName",
}


class Resolver:
    def __init__(self, template, parameters=None, stack=STACK, where=None):
        self.t = template
        self.stack = stack
        self.res = template.get("Resources", {})
        self.params = {k: str(v.get("Default", "")) for k, v in template.get("Parameters", {}).items()}
        self.params.update(parameters or {})
        self.pseudo = where or PSEUDO
        self.account, self.region = self.pseudo["AWS::AccountId"], self.pseudo["AWS::Region"]

    def condition(self, name):
        return bool(self.value(self.t.get("Conditions", {})[name]))

    def exists(self, logical):
        """Whether the resource is created with these parameters (its Condition holds)."""
        r = self.res.get(logical)
        return r is not None and ("Condition" not in r or self.condition(r["Condition"]))

    def name(self, logical):
        r = self.res.get(logical, {})
        prop = NAME_PROPERTY.get(r.get("Type"))
        given = r.get("Properties", {}).get(prop) if prop else None
        return self.value(given) if given is not None else f"{self.stack}-{logical}-EXAMPLE"

    def key_id(self, logical):
        digits = "".join(f"{ord(c):02x}" for c in logical)[:12].ljust(12, "0")
        return f"0000abcd-00ab-00cd-00ef-{digits}"

    def ref(self, name):
        if name in self.pseudo:
            return self.pseudo[name]
        if name == "AWS::StackName":
            return self.stack
        if name == "AWS::NoValue":
            return None
        if name in self.params:
            return self.params[name]
        kind = self.res.get(name, {}).get("Type")
        region, account = self.region, self.account
        if kind == "AWS::SecretsManager::Secret":
            return f"arn:aws:secretsmanager:{region}:{account}:secret:{self.name(name)}-AbCdEf"
        if kind == "AWS::KMS::Key":
            return self.key_id(name)
        if kind == "AWS::SNS::Topic":
            return f"arn:aws:sns:{region}:{account}:{self.name(name)}"
        if kind == "AWS::SQS::Queue":
            return f"https://sqs.{region}.amazonaws.com/{account}/{self.name(name)}"
        if kind == "AWS::CloudFormation::StackSet":
            return f"{self.name(name)}:0f0e0d0c-0000-4000-8000-00000000057e"
        return self.name(name)

    def getatt(self, logical, attr):
        kind = self.res.get(logical, {}).get("Type")
        name = self.name(logical)
        region, account = self.region, self.account
        if attr == "Arn":
            if kind == "AWS::IAM::Role":
                path = self.value(self.res[logical]["Properties"].get("Path", "/"))
                return f"arn:aws:iam::{account}:role{path}{name}"
            if kind == "AWS::SQS::Queue":
                return f"arn:aws:sqs:{region}:{account}:{name}"
            if kind == "AWS::DynamoDB::Table":
                return f"arn:aws:dynamodb:{region}:{account}:table/{name}"
            if kind == "AWS::KMS::Key":
                return f"arn:aws:kms:{region}:{account}:key/{self.key_id(logical)}"
            if kind == "AWS::Serverless::Function":
                return f"arn:aws:lambda:{region}:{account}:function:{name}"
            if kind == "AWS::Events::Rule":
                # A rule on a custom bus has the bus's name in its ARN.
                bus = self.value(self.res[logical].get("Properties", {}).get("EventBusName", "default"))
                return f"arn:aws:events:{region}:{account}:rule/{'' if bus == 'default' else bus + '/'}{name}"
            if kind == "AWS::Events::EventBus":
                return f"arn:aws:events:{region}:{account}:event-bus/{name}"
            if kind == "AWS::S3::Bucket":
                return f"arn:aws:s3:::{name}"
            return f"arn:aws:{(kind or 'x::').split('::')[1].lower()}:{region}:{account}:{name}"
        if attr == "QueueName":
            return name
        if attr == "FunctionUrl":
            return f"https://example.lambda-url.{region}.on.aws/"
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


def branches(v):
    """The elements of an unresolved policy value (one, or a list), each Fn::If read as both of
    its branches, AWS::NoValue left out."""
    out = []
    for x in (v if isinstance(v, list) else [v]):
        if isinstance(x, dict) and "Fn::If" in x:
            out += branches(x["Fn::If"][1]) + branches(x["Fn::If"][2])
        elif x is not None and x != {"Ref": "AWS::NoValue"}:
            out.append(x)
    return out


def one_or_many(v):
    """A policy value that may be one element or a list of them (an unresolved intrinsic is one)."""
    return list(v) if isinstance(v, list) else ([] if v is None else [v])


BY_INSTANCE_INDEX = {"Fn::Sub": "${Table.Arn}/index/by-instance"}
CRYPTO = ["kms:Decrypt", "kms:Encrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:GenerateDataKey",
          "kms:GenerateDataKeyWithoutPlaintext", "kms:CreateGrant"]
ISSUER_PREFIXES = ["owner#*", "pw#*", "rate#*", "trigger#*"]
# The reply item (issue 13): the issuer puts it in the mint's transaction and nothing more.
REPLY_PREFIXES = ["reply#*"]
ISSUER_REPLY_ACTIONS = ["dynamodb:PutItem"]
# Each function, its role, the role's name suffix, and the binary of its crate.
FUNCTIONS = {
    "IssuerFunction": ("IssuerRole", "issuer", "issuer"),
    "GuardFunction": ("GuardRole", "guard", "guard"),
    "FollowupFunction": ("FollowupRole", "followup", "followup"),
    "AttributionFunction": ("AttributionRole", "attribution", "attribution"),
}
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
    if set(functions) != set(FUNCTIONS):
        problems.append(f"expected {sorted(FUNCTIONS)}, found {sorted(functions)}")
    for name, fn in functions.items():
        props = fn.get("Properties", {})
        if props.get("Runtime", glob.get("Runtime")) != "provided.al2023":
            problems.append(f"{name}: runtime is not provided.al2023")
        if props.get("Architectures", glob.get("Architectures")) != ["arm64"]:
            problems.append(f"{name}: architecture is not arm64")
        if fn.get("Metadata", {}).get("BuildMethod") != "rust-cargolambda":
            problems.append(f"{name}: BuildMethod is not rust-cargolambda")
        binary = FUNCTIONS.get(name, (None, None, None))[2]
        if binary and fn.get("Metadata", {}).get("BuildProperties", {}).get("Binary") != binary:
            problems.append(f"{name}: Metadata BuildProperties Binary must be {binary}, found {fn.get('Metadata', {}).get('BuildProperties', {}).get('Binary')!r}")
        if props.get("CodeUri") != "..":
            problems.append(f"{name}: CodeUri must be .. (the workspace, which cargo-lambda builds)")
        if "ReservedConcurrentExecutions" not in props:
            problems.append(f"{name}: needs ReservedConcurrentExecutions (the guard's capacity must be its own, the issuer's capped)")
        for st in statements(template, name):
            for action in actions(st):
                if action == "*" or action.endswith(":*") or "*" in action.split(":", 1)[-1]:
                    problems.append(f"{name}: wildcard action {action}")
            # The one Deny of the stack's roles: the attribution role's, which keeps the response's
            # two IAM calls off the admin and ec2pass's own roles (attribution_invariants).
            if st.get("Effect") != "Allow" and not (name == "AttributionFunction" and st.get("Effect") == "Deny"
                                                    and set(actions(st)) <= set(RESPONSE_ACTIONS)):
                problems.append(f"{name}: unexpected Effect {st.get('Effect')}")
    if "RolePath" in glob:
        problems.append("Globals: RolePath is a carve-out anyone with iam:CreateRole can use; the roles are named exactly instead")
    # Roles named exactly <stack>-issuer and <stack>-guard, trusted by Lambda only.
    for fn_name, (role_name, suffix, _) in FUNCTIONS.items():
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
                          "ec2:ModifyInstanceAttribute", "sns:Publish", "dynamodb:Scan", "dynamodb:BatchWriteItem"):
            if forbidden in granted:
                problems.append(f"IssuerFunction: must not be allowed {forbidden}")
        # `status i-...` reads the by-instance index, and that is the issuer's only Query.
        queries = [st for st in sts if "dynamodb:Query" in actions(st)]
        if [branches(st.get("Resource")) for st in queries] != [[BY_INSTANCE_INDEX]] \
                or any(set(actions(st)) != {"dynamodb:Query"} or st.get("Condition") for st in queries):
            problems.append(f"IssuerFunction: exactly one statement allowing dynamodb:Query, alone, on the by-instance index (Resource !Sub \"${{Table.Arn}}/index/by-instance\"), and no other index or the table; found {json.dumps([st.get('Resource') for st in queries])}")
        env = issuer["Properties"].get("Environment", {}).get("Variables", {})
        if env.get("EC2PASS_SLACK_SIGNING_SECRET_ARN") != {"Ref": "SigningSecret"}:
            problems.append("IssuerFunction: EC2PASS_SLACK_SIGNING_SECRET_ARN must be !Ref SigningSecret")
        for st in sts:
            acts = actions(st)
            res_ = st.get("Resource")
            if any(a.startswith("dynamodb:") for a in acts) and res_ == {"Fn::GetAtt": ["Table", "Arn"]}:
                cond = st.get("Condition", {})
                keys = sorted(listed(cond.get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys")))
                if keys == REPLY_PREFIXES:
                    # The reply item: put, never read back (its reply URL is the follow-up's).
                    if sorted(acts) != ISSUER_REPLY_ACTIONS:
                        problems.append(f"IssuerFunction: may only {ISSUER_REPLY_ACTIONS} reply# items (the mint's transaction puts it; its reply URL is read by the follow-up role alone), found {sorted(acts)}")
                elif keys != ISSUER_PREFIXES:
                    problems.append(f"IssuerFunction: table access must be limited with ForAllValues:StringLike dynamodb:LeadingKeys {ISSUER_PREFIXES} (its own items, never verdicts), or {REPLY_PREFIXES} for the reply item's put, found {keys}")
                if str(cond.get("Null", {}).get("dynamodb:LeadingKeys")).lower() != "false":
                    problems.append("IssuerFunction: its LeadingKeys condition needs Null dynamodb:LeadingKeys false (ForAllValues alone holds when the key is absent)")
            if "secretsmanager:GetSecretValue" in acts and (
                    not branches(res_) or any(x not in ({"Ref": "SigningSecret"}, {"Ref": "MattermostToken"}, {"Ref": "ReplyKey"})
                                              for x in branches(res_))):
                problems.append("IssuerFunction: secretsmanager:GetSecretValue on anything but the SigningSecret, the ReplyKey (and the MattermostToken when Mattermost is a front)")
            if "kms:Decrypt" in acts and (res_ not in ({"Fn::GetAtt": ["SigningSecretKey", "Arn"]}, {"Fn::GetAtt": ["ReplyKeyKey", "Arn"]})
                                          or "kms:ViaService" not in st.get("Condition", {}).get("StringEquals", {})):
                problems.append("IssuerFunction: kms:Decrypt only on SigningSecretKey and ReplyKeyKey, through Secrets Manager (kms:ViaService)")
        if "secretsmanager:GetSecretValue" not in granted:
            problems.append("IssuerFunction: cannot read its signing secret (secretsmanager:GetSecretValue)")
        if not any("dynamodb:PutItem" in actions(st) and st.get("Resource") == {"Fn::GetAtt": ["Table", "Arn"]}
                   and "reply#*" in listed(st.get("Condition", {}).get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys"))
                   for st in sts):
            problems.append("IssuerFunction: cannot put the reply# item of a password (dynamodb:PutItem with LeadingKeys reply#*): every mint that keeps a reply URL would fail")
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
            problems.append("GuardFunction: must not reach a secret (the signing secret, the reply key, ...) or the signing key")
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
    problems += reply_key_invariants(template)
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
    replies = indexes.get("replies-due", {})
    if replies.get("KeySchema") != [{"AttributeName": "reply_due", "KeyType": "HASH"},
                                    {"AttributeName": "reply_due_at", "KeyType": "RANGE"}] \
            or replies.get("Projection") != {"ProjectionType": "ALL"}:
        problems.append("Table: needs the sparse index replies-due (hash reply_due, range reply_due_at, projection ALL), which the follow-up function queries for expiries")
    if not {("reply_due", "S"), ("reply_due_at", "N")} <= defined:
        problems.append("Table: AttributeDefinitions must define reply_due (S) and reply_due_at (N)")
    by_instance = indexes.get("by-instance", {})
    if by_instance.get("KeySchema") != [{"AttributeName": "instance_id", "KeyType": "HASH"},
                                        {"AttributeName": "decided_at", "KeyType": "RANGE"}] \
            or by_instance.get("Projection") != {"ProjectionType": "ALL"}:
        problems.append("Table: needs the sparse index by-instance (hash instance_id, range decided_at, projection ALL), which the issuer's `status` queries: only verdicts carry instance_id")
    if not {("instance_id", "S"), ("decided_at", "N")} <= defined:
        problems.append("Table: AttributeDefinitions must define instance_id (S) and decided_at (N), as the verdicts carry them (shared/src/store/dynamo.rs)")
    # Only the issuer queries by-instance.
    for fn in ("GuardFunction", "FollowupFunction"):
        if any(BY_INSTANCE_INDEX in branches(st.get("Resource")) or "index/*" in json.dumps(st.get("Resource"))
               for st in statements(template, fn) if "dynamodb:Query" in actions(st)):
            problems.append(f"{fn}: must not query the by-instance index (the issuer's `status` alone reads it)")
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
    problems += followup_invariants(template)
    problems += chat_invariants(template)
    problems += attribution_invariants(template)
    queue = res.get("GuardFailures", {}).get("Properties", {})
    if queue.get("QueueName") != {"Fn::Sub": "${AWS::StackName}-guard-failures"}:
        problems.append("GuardFailures: QueueName must be ${AWS::StackName}-guard-failures (the SCP protects ec2pass-* queues)")
    for logical in ("AlertKeyAlias", "SigningSecretKeyAlias", "SlackBotTokenKeyAlias", "ReplyKeyKeyAlias"):
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
            and rule_arn in one_or_many(st.get("Condition", {}).get("ArnEquals", {}).get("aws:SourceArn"))
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
                        and rule_arn not in one_or_many(st.get("Condition", {}).get("ArnNotEquals", {}).get("aws:SourceArn")):
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


# The stack's secrets: (logical id, its key, the roles besides the admin that read it, its
# placeholder (None: the issuer's PLACEHOLDER, read from issuer/src/secret.rs; GENERATED: a value
# CloudFormation generates), its name after <stack>-, the parameters with which it exists).
GENERATED = "generated by CloudFormation"
SECRETS = [
    ("SigningSecret", "SigningSecretKey", ("IssuerRole",), None, "slack-signing-secret", {}),
    # The Mattermost token: the signing secret's key, reader and protection.
    ("MattermostToken", "SigningSecretKey", ("IssuerRole",), "REPLACE-WITH-THE-MATTERMOST-COMMAND-TOKEN", "mattermost-token",
     {"MattermostOrigin": "https://chat.example.com"}),
    # The Slack bot token: the follow-up role's alone, under a key of its own.
    ("SlackBotToken", "SlackBotTokenKey", ("FollowupRole",), "REPLACE-WITH-THE-SLACK-BOT-TOKEN", "slack-bot-token",
     {"SlackBotDirectMessages": "Enabled"}),
    # The reply key (the reply URLs are stored sealed with it): the issuer seals, the follow-up role
    # opens; generated, in every stack, under a key of its own, never rotated.
    ("ReplyKey", "ReplyKeyKey", ("IssuerRole", "FollowupRole"), GENERATED, "reply-key", {}),
]
# Each key of a secret, the roles besides the admin that may decrypt with it, and its alias after
# alias/<stack>- (the SCPs find each key by that alias: alias/ec2pass-*<suffix>).
SECRET_KEYS = {"SigningSecretKey": (("IssuerRole",), "signing-secret"),
               "SlackBotTokenKey": (("FollowupRole",), "slack-bot-token"),
               "ReplyKeyKey": (("IssuerRole", "FollowupRole"), "reply-key")}
# The reply key's value, as CloudFormation generates it: 64 letters and digits (about 380 bits,
# hashed to the 256-bit AES key), nothing an environment file or a shell could mangle.
REPLY_KEY_GENERATION = {"PasswordLength": 64, "ExcludePunctuation": True}


def readers_named(readers):
    return " and ".join(readers)


def issuer_placeholder():
    source = (ROOT / "issuer" / "src" / "secret.rs").read_text(encoding="utf-8")
    exact = re.search(r'pub const PLACEHOLDER: &str = "([^"]+)";', source)
    prefix = re.search(r'pub const PLACEHOLDER_PREFIX: &str = "([^"]+)";', source)
    return (exact.group(1) if exact else None), (prefix.group(1) if prefix else None)


def key_problems(r, res, key, readers):
    """A secret's key: the admin keeps it, each reader's role may only kms:Decrypt through Secrets
    Manager, nobody else (the account root included) may encrypt, decrypt or grant."""
    problems = []
    try:
        kp = r.value(res[key]["Properties"]["KeyPolicy"])
        admin = next(s["Principal"]["AWS"] for s in kp["Statement"] if s.get("Sid") == "AdminManagesTheKey")
    except Exception:
        return [f"{key}: the key policy needs the statement AdminManagesTheKey naming the admin (or the key can be locked out)"]
    reader_arns = {r.getatt(reader, "Arn"): reader for reader in readers}
    root = f"arn:aws:iam::{ACCOUNT}:root"
    if admin != f"arn:aws:iam::{ACCOUNT}:role/ec2pass-admin":
        problems.append(f"{key}: with AdminRoleArn empty the admin must be role/ec2pass-admin, found {admin}")
    admin_keeps = False
    decrypting = set()
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
            if w in reader_arns:
                via = st.get("Condition", {}).get("StringEquals", {}).get("kms:ViaService")
                if set(crypto) - {"kms:Decrypt"} or via != f"secretsmanager.{REGION}.amazonaws.com":
                    problems.append(f"{key}: {reader_arns[w]} may only kms:Decrypt, and only through Secrets Manager (kms:ViaService secretsmanager.<region>.amazonaws.com)")
                elif crypto:
                    decrypting.add(reader_arns[w])
            elif crypto:
                problems.append(f"{key}: {w} may {', '.join(crypto)} (only {readers_named(readers)} and the admin may decrypt{'; the account keeps administrative actions only' if w == root else ''})")
            if w == "*" or (isinstance(principal, str) and principal == "*"):
                problems.append(f"{key}: a statement for every principal")
    if not admin_keeps:
        problems.append(f"{key}: the admin must keep kms:* (or at least kms:PutKeyPolicy) in the key policy, or the key is locked out")
    for reader in readers:
        if reader not in decrypting:
            problems.append(f"{key}: the key policy must let {reader} kms:Decrypt through Secrets Manager, or its secret cannot be read")
    return problems


def secret_problems(template, logical, key, readers, placeholder, suffix, parameters):
    """One secret: under its own key (never aws/secretsmanager), a placeholder (or a value
    CloudFormation generates) and never a value in the template, named <stack>-<suffix>, its
    resource policy denying GetSecretValue to all but its readers and the admin and every change
    to all but the admin."""
    problems = []
    res = template.get("Resources", {})
    secret = res.get(logical, {})
    props = secret.get("Properties", {})
    if secret.get("Type") != "AWS::SecretsManager::Secret":
        return [f"{logical}: missing (an AWS::SecretsManager::Secret)"]
    if props.get("KmsKeyId") != {"Ref": key}:
        problems.append(f"{logical}: must be encrypted with the stack's {key} (aws/secretsmanager decrypts for anyone in the account)")
    if placeholder == GENERATED:
        generation = props.get("GenerateSecretString")
        ok = isinstance(generation, dict) and set(generation) == set(REPLY_KEY_GENERATION)
        try:
            ok = ok and int(generation["PasswordLength"]) >= REPLY_KEY_GENERATION["PasswordLength"] \
                and str(generation["ExcludePunctuation"]).lower() == "true"
        except (TypeError, ValueError):
            ok = False
        if "SecretString" in props or not ok:
            problems.append(f"{logical}: CloudFormation generates its value: GenerateSecretString exactly {REPLY_KEY_GENERATION} "
                            f"(at least 64 letters and digits), and no SecretString (no placeholder, nothing for the operator to put in, no value in the template), found {json.dumps(generation)}")
        if "Condition" in secret:
            problems.append(f"{logical}: must exist in every stack (no Condition): every reply item's URL is sealed with it")
        rotations = [n for n, x in res.items() if x.get("Type") == "AWS::SecretsManager::RotationSchedule"
                     and x.get("Properties", {}).get("SecretId") == {"Ref": logical}]
        if rotations or "RotationRules" in props or "RotationLambdaARN" in props:
            problems.append(f"{logical}: must not be rotated ({rotations or 'rotation rules'}): a new value makes the reply URLs in flight unreadable, which ends their follow-ups")
    else:
        exact, prefix = issuer_placeholder()
        wanted = placeholder or exact
        if "GenerateSecretString" in props or not wanted or props.get("SecretString") != wanted \
                or not prefix or not str(props.get("SecretString")).startswith(prefix):
            problems.append(f"{logical}: SecretString must be the placeholder {wanted!r}, which starts with the prefix the code refuses (issuer/src/secret.rs PLACEHOLDER_PREFIX {prefix!r}), never a value")
    if props.get("Name") != {"Fn::Sub": f"${{AWS::StackName}}-{suffix}"}:
        problems.append(f"{logical}: Name must be ${{AWS::StackName}}-{suffix} (the SCPs find the secrets by name)")
    if key not in res:
        return problems + [f"{key}: missing"]
    r = Resolver(template, parameters)
    if not r.exists(logical):
        return problems + [f"{logical}: does not exist with {parameters} (its Condition)"]
    if not r.exists(key):
        problems.append(f"{key}: must exist wherever {logical} does")
    try:
        admin = r.admin_arn()
    except Exception:
        return problems + ["SigningSecretKey: the key policy needs the statement AdminManagesTheKey naming the admin (or the key can be locked out)"]
    reader_arns = [r.getatt(reader, "Arn") for reader in readers]
    policies = [(n, x) for n, x in res.items() if x.get("Type") == "AWS::SecretsManager::ResourcePolicy"
                and x.get("Properties", {}).get("SecretId") == {"Ref": logical}]
    if len(policies) != 1:
        return problems + [f"{logical}: needs one AWS::SecretsManager::ResourcePolicy"]
    name, policy = policies[0]
    if policy.get("Condition") != secret.get("Condition"):
        problems.append(f"{name}: must exist exactly when {logical} does (the same Condition)")
    rp = r.value(policy["Properties"]["ResourcePolicy"])
    if str(policy["Properties"].get("BlockPublicPolicy")).lower() != "true":
        problems.append(f"{name}: BlockPublicPolicy must be true")

    def denied_but(action):
        out = []
        for st in rp["Statement"]:
            if st.get("Effect") == "Deny" and st.get("Principal") == "*" and any(fnmatch.fnmatchcase(action, a) for a in actions(st)):
                cond = st.get("Condition", {})
                out.append(sorted(listed((cond.get("ArnNotEquals") or cond.get("ArnNotLike") or {}).get("aws:PrincipalArn"))))
        return out

    if sorted(reader_arns + [admin]) not in denied_but("secretsmanager:GetSecretValue"):
        problems.append(f"{name}: must deny secretsmanager:GetSecretValue to every principal but {readers_named(readers)} and the admin, exactly")
    for action in ("secretsmanager:PutResourcePolicy", "secretsmanager:DeleteResourcePolicy", "secretsmanager:PutSecretValue",
                   "secretsmanager:UpdateSecret", "secretsmanager:DeleteSecret", "secretsmanager:RotateSecret"):
        if [admin] not in denied_but(action):
            problems.append(f"{name}: must deny {action} to every principal but the admin")
    return problems


def secret_invariants(template):
    """The secrets: each in Secrets Manager under its own key, which only its readers' roles
    (through Secrets Manager) and the admin may use to decrypt; the admin keeps the keys. The
    signing secret and the Mattermost token are the issuer's, the bot token the follow-up role's:
    neither role reads the other's, and the guard none. The reply key is the issuer's and the
    follow-up role's, and the guard's not."""
    problems = []
    res = template.get("Resources", {})
    for logical, key, readers, placeholder, suffix, parameters in SECRETS:
        if logical in ("SigningSecret", "ReplyKey") or logical in res:
            problems += secret_problems(template, logical, key, readers, placeholder, suffix, parameters)
    for key, (readers, suffix) in SECRET_KEYS.items():
        if key not in res:
            if key in ("SigningSecretKey", "ReplyKeyKey"):
                problems.append(f"{key}: missing")
            continue
        r = Resolver(template, {"SlackBotDirectMessages": "Enabled"})
        problems += key_problems(r, res, key, readers)
        alias = [x for x in res.values() if x.get("Type") == "AWS::KMS::Alias"
                 and x.get("Properties", {}).get("TargetKeyId") == {"Ref": key}]
        if len(alias) != 1 or alias[0].get("Condition") != res[key].get("Condition"):
            problems.append(f"{key}: needs one AWS::KMS::Alias, existing when the key does (the SCPs find keys by alias)")
        elif alias[0].get("Properties", {}).get("AliasName") != {"Fn::Sub": f"alias/${{AWS::StackName}}-{suffix}"}:
            problems.append(f"{key}: its alias must be alias/${{AWS::StackName}}-{suffix} (the SCPs find the key by kms:ResourceAliases alias/ec2pass-*{suffix}), found {json.dumps(alias[0].get('Properties', {}).get('AliasName'))}")
    # Each role reads its own secrets, and no other's.
    for logical, key, readers, _, _, parameters in SECRETS:
        if logical not in res:
            continue
        for role in ("IssuerRole", "GuardRole", "FollowupRole", "AttributionRole"):
            if role in readers or role not in res:
                continue
            r = Resolver(template, {**CHAT_PARAMS})
            arns = {r.ref(logical), r.getatt(key, "Arn") if key in res else None}
            for st in ec2_or_all(resolved_policies(r, template, role)):
                if set(listed(st.get("Resource"))) & arns or (
                        "*" in listed(st.get("Resource")) and any(a.startswith(("secretsmanager:", "kms:")) for a in actions(st))):
                    problems.append(f"{role}: must not reach {logical} or its key {key} (only {readers_named(readers)} and the admin read it)")
    return problems


# The reply key's variable, and the functions that read it with the role policy that lets each.
REPLY_KEY_VARIABLE = "EC2PASS_REPLY_KEY_SECRET_ARN"
REPLY_KEY_READERS = {"IssuerFunction": "IssuerReplyKeyAccess", "FollowupFunction": "FollowupReplyKeyAccess"}
VIA_SECRETS_MANAGER = f"via secretsmanager.{REGION}.amazonaws.com"
# The issuer's secrets and keys, exactly: (action, what, "via" its kms:ViaService or None), as
# FOLLOWUP_GRANTS; and the Mattermost token's, with MattermostOrigin.
ISSUER_SECRET_GRANTS = {
    ("secretsmanager:GetSecretValue", "the signing secret", None),
    ("kms:Decrypt", "the signing key", VIA_SECRETS_MANAGER),
    ("secretsmanager:GetSecretValue", "the reply key", None),
    ("kms:Decrypt", "the reply key's key", VIA_SECRETS_MANAGER),
}
MATTERMOST_GRANTS = {("secretsmanager:GetSecretValue", "the Mattermost token", None)}


def secret_names(r):
    """The stack's secrets and their keys, by their resolved ARNs."""
    return {r.ref("SigningSecret"): "the signing secret", r.getatt("SigningSecretKey", "Arn"): "the signing key",
            r.ref("MattermostToken"): "the Mattermost token", r.ref("SlackBotToken"): "the bot token",
            r.getatt("SlackBotTokenKey", "Arn"): "the bot token key", r.ref("ReplyKey"): "the reply key",
            r.getatt("ReplyKeyKey", "Arn"): "the reply key's key"}


def secret_grants(r, template, role):
    """A role's Secrets Manager and KMS grants (and any wildcard action), resolved, as (action,
    what, "via" the kms:ViaService or None), and the problems of statements that cannot be read so."""
    names = secret_names(r)
    grants, problems = set(), []
    for st in ec2_or_all(resolved_policies(r, template, role)):
        if {"NotAction", "NotResource", "NotPrincipal"} & set(st):
            problems.append(f"{role}: the statement {st.get('Sid')} must name its Action and Resource (no Not...)")
        via = st.get("Condition", {}).get("StringEquals", {}).get("kms:ViaService")
        for a in actions(st):
            if not (a.startswith(("secretsmanager:", "kms:")) or "*" in a.split(":", 1)[0]):
                continue
            for x in listed(st.get("Resource")):
                grants.add((a, names.get(x, x), f"via {via}" if via else None))
    return grants, problems


def reply_key_invariants(template):
    """The reply key's readers: the issuer (it seals each reply URL before it stores it) and the
    follow-up function (it opens it), each given the secret's ARN in every stack and a role policy
    of its own that exists before the function; no other function is given it; and the issuer's
    role reads exactly its secrets, in every setting (the follow-up role's: followup_invariants)."""
    problems = []
    res = template.get("Resources", {})
    for fn, access in REPLY_KEY_READERS.items():
        f = res.get(fn, {})
        env = f.get("Properties", {}).get("Environment", {}).get("Variables", {})
        if env.get(REPLY_KEY_VARIABLE) != {"Ref": "ReplyKey"}:
            problems.append(f"{fn}: {REPLY_KEY_VARIABLE} must be !Ref ReplyKey in every stack (the "
                            + ("issuer seals" if fn == "IssuerFunction" else "follow-up function opens")
                            + f" every reply URL with it), found {json.dumps(env.get(REPLY_KEY_VARIABLE))}")
        if access not in listed(f.get("DependsOn")):
            problems.append(f"{fn}: DependsOn must include {access} (its role may read the reply key before the function's first cold start)")
        policy = res.get(access, {})
        role = FUNCTIONS[fn][0]
        if policy.get("Type") != "AWS::IAM::RolePolicy" or policy.get("Properties", {}).get("RoleName") != {"Ref": role} or "Condition" in policy:
            problems.append(f"{access}: must be an AWS::IAM::RolePolicy of {role} (RoleName !Ref {role}) in every stack, apart from the role: the reply key's key policy names the role")
    for fn, f in res.items():
        if f.get("Type") == "AWS::Serverless::Function" and fn not in REPLY_KEY_READERS \
                and REPLY_KEY_VARIABLE in f.get("Properties", {}).get("Environment", {}).get("Variables", {}):
            problems.append(f"{fn}: must not be given {REPLY_KEY_VARIABLE}: only the issuer and the follow-up function read the reply key")
    mattermost = {"MattermostOrigin": "https://chat.example.com"}
    for label, parameters, with_mattermost in (("a single account", {}, False), ("a hub", HUB_UNITS_PARAMS, False),
                                               ("MattermostOrigin set", mattermost, True), ("every chat option", CHAT_PARAMS, True)):
        try:
            grants, unreadable = secret_grants(Resolver(template, parameters), template, "IssuerRole")
        except Exception as e:  # a broken copy can break the checks' own assumptions
            problems.append(f"IssuerRole: its policies do not resolve in {label}: {e!r}")
            continue
        problems += unreadable
        wanted = ISSUER_SECRET_GRANTS | (MATTERMOST_GRANTS if with_mattermost else set())
        extra, missing = sorted(grants - wanted, key=str), sorted(wanted - grants, key=str)
        if extra or missing:
            problems.append(f"IssuerRole: in {label} exactly GetSecretValue of the signing secret"
                            + (", the Mattermost token" if with_mattermost else "")
                            + f" and the reply key, and kms:Decrypt of their keys through Secrets Manager; not allowed: {extra}; missing: {missing}")
    return problems


ALARMED = [  # (namespace, metric, dimension, value, what it catches)
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", {"Fn::GetAtt": ["GuardFailures", "QueueName"]}, "events in the failure queue"),
    ("AWS/Lambda", "Errors", "FunctionName", {"Ref": "GuardFunction"}, "guard errors"),
    ("AWS/Lambda", "Throttles", "FunctionName", {"Ref": "GuardFunction"}, "guard throttles"),
    ("AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", {"Fn::GetAtt": ["StateChangeQueue", "QueueName"]}, "state changes waiting in the queue"),
    ("AWS/Lambda", "AsyncEventsDropped", "FunctionName", {"Ref": "GuardFunction"}, "sweeps Lambda dropped"),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", {"Fn::GetAtt": ["FollowupFailures", "QueueName"]},
     "follow-ups that could not be told, in the follow-up failure queue"),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", {"Fn::GetAtt": ["CallFailures", "QueueName"]},
     "calls that could not be attributed, in the call failure queue"),
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
# The follow-ups (issue 13): the follow-up function, its role, its queue and their alarm.
# ---------------------------------------------------------------------------------------------

# Everything the follow-up role may do, exactly: (action, resource, LeadingKeys or None). Its
# CloudWatch Logs come from AWSLambdaBasicExecutionRole, as the other roles' do.
FOLLOWUP_GRANTS = {
    ("dynamodb:GetItem", "the table", ("pw#*", "reply#*")),
    ("dynamodb:UpdateItem", "the table", ("reply#*",)),
    ("dynamodb:Query", "the replies-due index", None),
    ("sqs:ReceiveMessage", "the follow-up queue", None),
    ("sqs:DeleteMessage", "the follow-up queue", None),
    ("sqs:GetQueueAttributes", "the follow-up queue", None),
    # The reply key, which opens the sealed reply URLs, decrypting its key through Secrets Manager only.
    ("secretsmanager:GetSecretValue", "the reply key", None),
    ("kms:Decrypt", "the reply key's key", f"via secretsmanager.{REGION}.amazonaws.com"),
}
# With ChannelAlerts: publish to the channel topic, under the alert key, through SNS only.
CHANNEL_GRANTS = {
    ("sns:Publish", "the channel topic", None),
    ("dynamodb:UpdateItem", "the table", ("channel#*",)),
    ("kms:GenerateDataKey", "the alert key", f"via sns.{REGION}.amazonaws.com"),
    ("kms:Decrypt", "the alert key", f"via sns.{REGION}.amazonaws.com"),
}
# With SlackBotDirectMessages: read the bot token, decrypting its key through Secrets Manager only.
BOT_GRANTS = {
    ("secretsmanager:GetSecretValue", "the bot token", None),
    ("kms:Decrypt", "the bot token key", f"via secretsmanager.{REGION}.amazonaws.com"),
}
CHAT_PARAMS = {"MattermostOrigin": "https://chat.example.com", "SlackBotDirectMessages": "Enabled", "ChannelAlerts": "Enabled",
               "ChatbotSlackWorkspaceId": "T0123ABCD", "ChatbotSlackChannelId": "C0123ABCD"}
# (what, parameters, channel grants?, bot grants?): the settings the follow-up role is checked in.
FOLLOWUP_SETTINGS = [
    ("a single account", {}, False, False),
    ("a hub", HUB_UNITS_PARAMS, False, False),
    ("ChannelAlerts=Enabled", {"ChannelAlerts": "Enabled"}, True, False),
    ("SlackBotDirectMessages=Enabled", {"SlackBotDirectMessages": "Enabled"}, False, True),
    ("every chat option", CHAT_PARAMS, True, True),
]
BASIC_EXECUTION = {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"}
# The follow-ups' settings, and the parameter behind each (docs/configuration.md). Always set,
# unlike ORG_VARIABLES, which are empty outside a hub.
REPLY_VARIABLES = {
    "IssuerFunction": {"EC2PASS_REPLY_ORIGINS": ["ReplyOrigins", "MattermostOrigin"]},
    "FollowupFunction": {"EC2PASS_REPLY_ORIGINS": ["ReplyOrigins", "MattermostOrigin"]},
}
REPLY_ORIGINS_DEFAULT = "https://hooks.slack.com"
# The alerts that can tell a requester something: a start allowed with the password, or denied.
FOLLOWUP_VERDICTS = ["allow", "deny"]
FOLLOWUP_RECEIVES = 5


def followup_grants(r, template):
    """The follow-up role's grants, resolved, as (action, resource, LeadingKeys or "via" the
    kms:ViaService) like FOLLOWUP_GRANTS, and the problems of statements that cannot be read so."""
    table = r.getatt("Table", "Arn")
    names = {table: "the table", f"{table}/index/replies-due": "the replies-due index",
             r.getatt("FollowupQueue", "Arn"): "the follow-up queue", r.ref("ChannelTopic"): "the channel topic",
             r.getatt("AlertKey", "Arn"): "the alert key", r.ref("SlackBotToken"): "the bot token",
             r.getatt("SlackBotTokenKey", "Arn"): "the bot token key", r.ref("ReplyKey"): "the reply key",
             r.getatt("ReplyKeyKey", "Arn"): "the reply key's key"}
    grants, problems = set(), []
    for st in ec2_or_all(resolved_policies(r, template, "FollowupRole")):
        if st.get("Effect") != "Allow" or {"NotAction", "NotResource", "NotPrincipal"} & set(st):
            problems.append(f"FollowupRole: the statement {st.get('Sid')} must be an Allow with Action and Resource (no Not...)")
        cond = st.get("Condition", {})
        keys = cond.get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys")
        keys = tuple(sorted(listed(keys))) if keys is not None else None
        if keys is not None and str(cond.get("Null", {}).get("dynamodb:LeadingKeys")).lower() != "false":
            problems.append(f"FollowupRole: the statement {st.get('Sid')} needs Null dynamodb:LeadingKeys false (ForAllValues alone holds when the key is absent)")
        via = cond.get("StringEquals", {}).get("kms:ViaService")
        for a in actions(st):
            for x in listed(st.get("Resource")):
                grants.add((a, names.get(x, x), keys if keys is not None else (f"via {via}" if via else None)))
    return grants, problems


def followup_invariants(template):
    """The follow-up function (issue 13): its binary, its role's exact grants, its events, its queue
    subscribed to the alert topic with the verdict filter and open to that topic alone, the queue's
    dead-letter queue, and the settings it shares with the issuer."""
    problems = []
    res = template.get("Resources", {})
    params = template.get("Parameters", {})
    fn = res.get("FollowupFunction", {})
    props = fn.get("Properties", {})
    if fn.get("Type") != "AWS::Serverless::Function":
        return ["FollowupFunction: missing (an AWS::Serverless::Function, binary followup of the issuer crate)"]
    for logical, kind in (("FollowupRole", "AWS::IAM::Role"), ("FollowupQueue", "AWS::SQS::Queue"),
                          ("FollowupFailures", "AWS::SQS::Queue")):
        if res.get(logical, {}).get("Type") != kind:
            problems.append(f"{logical}: missing (an {kind})")
    if problems:
        return problems
    # Capacity of its own, capped.
    if props.get("ReservedConcurrentExecutions") != {"Ref": "FollowupReservedConcurrency"}:
        problems.append("FollowupFunction: ReservedConcurrentExecutions must be !Ref FollowupReservedConcurrency")
    cap = params.get("FollowupReservedConcurrency", {})
    if str(cap.get("Default")) != "2" or int(cap.get("MinValue", 0)) < 1:
        problems.append("parameter FollowupReservedConcurrency: Default 2, MinValue at least 1")
    # Settings.
    env = props.get("Environment", {}).get("Variables", {})
    if env.get("EC2PASS_TABLE") != {"Ref": "Table"}:
        problems.append("FollowupFunction: EC2PASS_TABLE must be !Ref Table")
    # The reply origins: ReplyOrigins, and the Mattermost server when it is a front; the same for both.
    for what, parameters, wanted in (
            ("by default", {}, REPLY_ORIGINS_DEFAULT),
            ("with ReplyOrigins set", {"ReplyOrigins": "https://hooks.slack.com,https://chat.example.com:8443"},
             "https://hooks.slack.com,https://chat.example.com:8443"),
            ("with MattermostOrigin set", {"MattermostOrigin": "https://chat.example.com"}, f"{REPLY_ORIGINS_DEFAULT},https://chat.example.com")):
        r = Resolver(template, parameters)
        for name, variables in REPLY_VARIABLES.items():
            fn_env = res.get(name, {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
            for var in variables:
                try:
                    got = r.value(fn_env.get(var))
                except Exception as e:  # a broken copy can break the checks' own assumptions
                    got = repr(e)
                if got != wanted:
                    problems.append(f"{name}: {var} must be {wanted!r} {what} (ReplyOrigins, and MattermostOrigin when set, comma-joined: the issuer keeps a reply URL, and the follow-up posts to one, only at these origins), found {got!r}")
    origins = params.get("ReplyOrigins", {})
    if origins.get("Default") != REPLY_ORIGINS_DEFAULT:
        problems.append(f"parameter ReplyOrigins: the default must be {REPLY_ORIGINS_DEFAULT!r}")
    pattern = origins.get("AllowedPattern", "")
    for value, ok in ((REPLY_ORIGINS_DEFAULT, True), ("https://hooks.slack.com,https://chat.example.com:8443", True),
                      ("http://hooks.slack.com", False), ("https://hooks.slack.com/commands", False),
                      ("https://hooks.slack.com, https://chat.example.com", False), ("hooks.slack.com", False)):
        try:
            matches = re.search(pattern, value) is not None
        except re.error:
            matches = None
        if matches != ok:
            problems.append(f"parameter ReplyOrigins: its AllowedPattern must {'take' if ok else 'refuse'} {value!r} (https origins, no path, comma-separated, no spaces)")
    # The role: exactly FOLLOWUP_GRANTS, in every setting.
    role = res["FollowupRole"].get("Properties", {})
    if role.get("ManagedPolicyArns") != [BASIC_EXECUTION] or "PermissionsBoundary" in role:
        problems.append("FollowupRole: its only managed policy is AWSLambdaBasicExecutionRole (CloudWatch Logs, as the other roles)")
    for label, parameters, channel, bot in FOLLOWUP_SETTINGS:
        try:
            grants, unreadable = followup_grants(Resolver(template, parameters), template)
        except Exception as e:  # a broken copy can break the checks' own assumptions
            problems.append(f"FollowupRole: its policies do not resolve in {label}: {e!r}")
            continue
        problems += unreadable
        services = {"dynamodb", "sqs", "secretsmanager", "kms"} | ({"sns"} if channel else set())
        others = sorted({a for a, _, _ in grants if a.split(":", 1)[0] not in services})
        if others:
            problems.append(f"FollowupRole: in {label} it may only use {sorted(services)}: no EC2, and SNS only with ChannelAlerts, found {others}")
        wanted = FOLLOWUP_GRANTS | (CHANNEL_GRANTS if channel else set()) | (BOT_GRANTS if bot else set())
        extra, missing = sorted(grants - wanted, key=str), sorted(wanted - grants, key=str)
        if extra or missing:
            problems.append(f"FollowupRole: in {label} exactly GetItem of reply# and pw# items, UpdateItem of reply# items, Query of the replies-due index, "
                            f"ReceiveMessage, DeleteMessage and GetQueueAttributes of the follow-up queue, GetSecretValue of the reply key with its key through Secrets Manager"
                            + (", sns:Publish on the channel topic with the alert key through SNS and UpdateItem of channel# items" if channel else "")
                            + (", GetSecretValue of the bot token with its key through Secrets Manager" if bot else "")
                            + f"; not allowed: {extra}; missing: {missing}")
    # Its events: the queue's batches, and the expiry run.
    events = props.get("Events", {})
    kinds = sorted(e.get("Type") for e in events.values())
    if kinds != ["SQS", "Schedule"]:
        problems.append(f"FollowupFunction: needs exactly one SQS event (the follow-up queue) and one Schedule (the expiries), found {kinds}")
    queue_ref = {"Fn::GetAtt": ["FollowupQueue", "Arn"]}
    for e in events.values():
        ep = e.get("Properties", {})
        if e.get("Type") == "SQS":
            if ep.get("Queue") != queue_ref:
                problems.append("FollowupFunction: its SQS event must take from the FollowupQueue")
            if int(ep.get("BatchSize", 10)) != 10 or "ReportBatchItemFailures" not in ep.get("FunctionResponseTypes", []):
                problems.append("FollowupFunction: its SQS event needs BatchSize 10 and FunctionResponseTypes ReportBatchItemFailures (one failed post does not send the batch round again)")
        if e.get("Type") == "Schedule" and ep.get("Schedule") != "rate(5 minutes)":
            problems.append("FollowupFunction: its Schedule must be rate(5 minutes) (the passwords that expired unused)")
    # The queue and its dead-letter queue.
    q = res["FollowupQueue"].get("Properties", {})
    if q.get("QueueName") != {"Fn::Sub": "${AWS::StackName}-followups"}:
        problems.append("FollowupQueue: QueueName must be ${AWS::StackName}-followups (the SCP protects ec2pass-* queues)")
    failures = res["FollowupFailures"].get("Properties", {})
    if failures.get("QueueName") != {"Fn::Sub": "${AWS::StackName}-followup-failures"}:
        problems.append("FollowupFailures: QueueName must be ${AWS::StackName}-followup-failures (the SCP protects ec2pass-* queues)")
    for logical, qp in (("FollowupQueue", q), ("FollowupFailures", failures)):
        if str(qp.get("SqsManagedSseEnabled")).lower() != "true" or "KmsMasterKeyId" in qp:
            problems.append(f"{logical}: must be encrypted with SSE-SQS (SqsManagedSseEnabled), as the state-change queue")
    timeout = int(props.get("Timeout", template.get("Globals", {}).get("Function", {}).get("Timeout", 3)))
    if int(q.get("VisibilityTimeout", 30)) < 6 * timeout:
        problems.append(f"FollowupQueue: VisibilityTimeout must be at least six times the function's Timeout ({6 * timeout} s)")
    redrive = q.get("RedrivePolicy", {})
    if redrive.get("deadLetterTargetArn") != {"Fn::GetAtt": ["FollowupFailures", "Arn"]} \
            or int(redrive.get("maxReceiveCount", 0)) != FOLLOWUP_RECEIVES:
        problems.append(f"FollowupQueue: needs a RedrivePolicy to FollowupFailures after {FOLLOWUP_RECEIVES} receives (a dead-letter queue, and its alarm)")
    # The subscription: the alert topic, the verdict filter, the SNS envelope.
    subs = [x.get("Properties", {}) for x in res.values() if x.get("Type") == "AWS::SNS::Subscription"
            and x.get("Properties", {}).get("Endpoint") == queue_ref]
    if len(subs) != 1:
        problems.append(f"FollowupQueue: needs one AWS::SNS::Subscription of the alert topic (Protocol sqs, Endpoint the queue's ARN), found {len(subs)}")
    for s in subs:
        if s.get("TopicArn") != {"Ref": "AlertTopic"} or s.get("Protocol") != "sqs":
            problems.append("FollowupSubscription: must subscribe the queue to the AlertTopic (Protocol sqs)")
        if str(s.get("RawMessageDelivery", "false")).lower() != "false":
            problems.append("FollowupSubscription: RawMessageDelivery must be off (the function reads the SNS envelope)")
        policy = s.get("FilterPolicy")
        policy = json.loads(policy) if isinstance(policy, str) else policy
        verdicts = policy.get("verdict") if isinstance(policy, dict) else None
        if not isinstance(policy, dict) or set(policy) != {"verdict"} or not isinstance(verdicts, list) or sorted(verdicts) != FOLLOWUP_VERDICTS \
                or s.get("FilterPolicyScope", "MessageAttributes") != "MessageAttributes":
            problems.append(f"FollowupSubscription: needs FilterPolicy {{\"verdict\": {FOLLOWUP_VERDICTS}}} on the message attributes (only allows and denies tell a requester anything), found {json.dumps(policy)}")
    # The queue's policy: the alert topic sends, nobody else.
    docs = [x["Properties"].get("PolicyDocument", {}) for x in res.values() if x.get("Type") == "AWS::SQS::QueuePolicy"
            and {"Ref": "FollowupQueue"} in x.get("Properties", {}).get("Queues", [])]
    sts = [st for d in docs for st in d.get("Statement", [])]
    topic = {"Ref": "AlertTopic"}
    topic_sends = [st for st in sts if st.get("Effect") == "Allow" and "sqs:SendMessage" in actions(st)]
    if len(docs) != 1 or not topic_sends:
        problems.append("FollowupQueue: needs one AWS::SQS::QueuePolicy letting sns.amazonaws.com sqs:SendMessage with aws:SourceArn the AlertTopic")
    for st in sts:
        if st.get("Effect") == "Allow" and (st.get("Principal") != {"Service": "sns.amazonaws.com"} or actions(st) != ["sqs:SendMessage"]
                                            or one_or_many(st.get("Condition", {}).get("ArnEquals", {}).get("aws:SourceArn")) != [topic]):
            problems.append(f"FollowupQueuePolicy: the statement {st.get('Sid')} must let only sns.amazonaws.com sqs:SendMessage, with Condition ArnEquals aws:SourceArn the AlertTopic (any other topic's alerts would be told as ours), found {json.dumps(st)}")
        if st.get("Effect") == "Deny" and "sqs:SendMessage" in actions(st) \
                and topic not in one_or_many(st.get("Condition", {}).get("ArnNotEquals", {}).get("aws:SourceArn")):
            problems.append(f"FollowupQueuePolicy: the Deny {st.get('Sid')} of sqs:SendMessage must except the AlertTopic (ArnNotEquals aws:SourceArn), or no alert arrives")
    if not any(st.get("Effect") == "Deny" and st.get("Principal") == "*" and "sqs:SendMessage" in actions(st) for st in sts):
        problems.append("FollowupQueuePolicy: needs a Deny of sqs:SendMessage to everyone but the AlertTopic and the admin (a forged alert would post a false follow-up)")
    return problems


# ---------------------------------------------------------------------------------------------
# The chat fronts and channels (issue 13, follow-ups): Mattermost as a second front, Slack bot
# direct messages, and deny alerts in a chat channel through Amazon Q Developer in chat
# applications.
# ---------------------------------------------------------------------------------------------

# What exists only with an option, and the option's parameters.
CHAT_ONLY = {
    "MattermostToken": {"MattermostOrigin": "https://chat.example.com"},
    "MattermostTokenPolicy": {"MattermostOrigin": "https://chat.example.com"},
    "SlackBotTokenKey": {"SlackBotDirectMessages": "Enabled"},
    "SlackBotTokenKeyAlias": {"SlackBotDirectMessages": "Enabled"},
    "SlackBotToken": {"SlackBotDirectMessages": "Enabled"},
    "SlackBotTokenPolicy": {"SlackBotDirectMessages": "Enabled"},
    "FollowupBotTokenAccess": {"SlackBotDirectMessages": "Enabled"},
    "ChannelTopic": {"ChannelAlerts": "Enabled"},
    "ChannelTopicPolicy": {"ChannelAlerts": "Enabled"},
    "ChannelRole": {"ChannelAlerts": "Enabled", "ChatbotSlackWorkspaceId": "T0123ABCD", "ChatbotSlackChannelId": "C0123ABCD"},
    "ChannelConfiguration": {"ChannelAlerts": "Enabled", "ChatbotSlackWorkspaceId": "T0123ABCD", "ChatbotSlackChannelId": "C0123ABCD"},
}
CHAT_OPTIONS = {  # parameter -> (default, AllowedValues or None)
    "MattermostOrigin": ("", None),
    "SlackBotDirectMessages": ("Disabled", ["Disabled", "Enabled"]),
    "ChannelAlerts": ("Disabled", ["Disabled", "Enabled"]),
    "ChatbotSlackWorkspaceId": ("", None),
    "ChatbotSlackChannelId": ("", None),
}
SLACK_API = "https://slack.com"
DENY_ALL = {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AWSDenyAll"}
# Each variable, its function, and what it resolves to: "" without its option, the resource with it.
CHAT_VARIABLES = [
    ("IssuerFunction", "EC2PASS_MATTERMOST_TOKEN_SECRET_ARN", "MattermostToken", {"MattermostOrigin": "https://chat.example.com"}),
    ("FollowupFunction", "EC2PASS_CHAT_TOPIC_ARN", "ChannelTopic", {"ChannelAlerts": "Enabled"}),
    ("FollowupFunction", "EC2PASS_SLACK_BOT_TOKEN_SECRET_ARN", "SlackBotToken", {"SlackBotDirectMessages": "Enabled"}),
]


def chat_invariants(template):
    """Off by default and nothing of them exists; each option creates exactly its resources, sets
    its variable, and gives its role exactly its grants (followup_invariants); the channel topic
    is under the alert key and only the follow-up role publishes to it; the chat channel's role
    can do nothing, and its guardrail denies everything."""
    problems = []
    res = template.get("Resources", {})
    params = template.get("Parameters", {})
    outputs = template.get("Outputs", {})
    for name, (default, values) in CHAT_OPTIONS.items():
        if name not in params:
            problems.append(f"missing parameter {name} (docs/alerts.md, docs/policies.md)")
            continue
        if str(params[name].get("Default")) != default:
            problems.append(f"parameter {name}: the default must be {default!r} (by default the chat is exactly as before)")
        if values is not None and params[name].get("AllowedValues") != values:
            problems.append(f"parameter {name}: AllowedValues must be {values}")
    pattern = params.get("MattermostOrigin", {}).get("AllowedPattern", "")
    for value, ok in (("", True), ("https://chat.example.com", True), ("https://chat.example.com:8065", True),
                      ("http://chat.example.com", False), ("https://chat.example.com/", False), ("https://chat.example.com/hooks", False),
                      ("https://chat.example.com,https://evil.example", False), ("chat.example.com", False)):
        try:
            matches = re.search(pattern, value) is not None
        except re.error:
            matches = None
        if matches != ok:
            problems.append(f"parameter MattermostOrigin: its AllowedPattern must {'take' if ok else 'refuse'} {value!r} (one https origin, no path, or empty)")
    # What exists, with which option.
    single = Resolver(template)
    try:
        for logical, parameters in CHAT_ONLY.items():
            if logical not in res:
                problems.append(f"{logical}: missing (it exists with {parameters})")
                continue
            if single.exists(logical):
                problems.append(f"{logical}: must not exist by default (only with {parameters}: a Condition)")
            if not Resolver(template, parameters).exists(logical):
                problems.append(f"{logical}: must exist with {parameters}")
        # A channel topic without both ids makes no Slack channel.
        for parameters in ({"ChannelAlerts": "Enabled"}, {"ChannelAlerts": "Enabled", "ChatbotSlackWorkspaceId": "T0123ABCD"}):
            if Resolver(template, parameters).exists("ChannelConfiguration"):
                problems.append(f"ChannelConfiguration: must not exist with {parameters} (both ids, and ChannelAlerts)")
        for fn, var, logical, parameters in CHAT_VARIABLES:
            env = res.get(fn, {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
            if var not in env:
                problems.append(f"{fn}: must set {var} (empty without its option, the {logical} with {parameters})")
                continue
            if single.value(env[var]) != "":
                problems.append(f"{fn}: {var} must be empty by default (empty is unset)")
            r = Resolver(template, parameters)
            if r.value(env[var]) != r.ref(logical):
                problems.append(f"{fn}: {var} must be the {logical} ({r.ref(logical)}) with {parameters}, found {r.value(env[var])!r}")
        env = res.get("FollowupFunction", {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
        if env.get("EC2PASS_SLACK_API") != SLACK_API:
            problems.append(f"FollowupFunction: EC2PASS_SLACK_API must be exactly {SLACK_API!r}, a constant (the bot token goes to Slack's Web API and nowhere else), found {env.get('EC2PASS_SLACK_API')!r}")
    except Exception as e:  # a broken copy can break the checks' own assumptions
        problems.append(f"chat options: the template cannot be resolved: {e!r}")
    # The channel topic.
    topic = res.get("ChannelTopic", {}).get("Properties", {})
    if topic.get("TopicName") != {"Fn::Sub": "${AWS::StackName}-channel"}:
        problems.append("ChannelTopic: TopicName must be ${AWS::StackName}-channel (the SCP's KeepTheAlertTopic keeps sns:...:ec2pass-*)")
    if topic.get("KmsMasterKeyId") != {"Ref": "AlertKey"}:
        problems.append("ChannelTopic: must be encrypted with the stack's AlertKey, as the alert topic (never unencrypted, and not alias/aws/sns)")
    chat = Resolver(template, CHAT_PARAMS)
    try:
        docs = [(n, chat.value(x["Properties"].get("PolicyDocument", {}))) for n, x in res.items() if x.get("Type") == "AWS::SNS::TopicPolicy"
                and {"Ref": "ChannelTopic"} in x.get("Properties", {}).get("Topics", [])]
        admin = chat.admin_arn()
        publishers = sorted([chat.getatt("FollowupRole", "Arn"), admin])
        guarded = False
        for n, d in docs:
            for st in d.get("Statement", []):
                if st.get("Effect") == "Allow":
                    problems.append(f"{n}: allows {json.dumps(st.get('Principal'))} {actions(st)}: the channel topic's policy only takes away")
                if st.get("Effect") == "Deny" and st.get("Principal") == "*" and "sns:Publish" in actions(st) \
                        and sorted(listed(st.get("Condition", {}).get("ArnNotEquals", {}).get("aws:PrincipalArn"))) == publishers:
                    guarded = True
        if len(docs) != 1 or not guarded:
            problems.append("ChannelTopic: needs one AWS::SNS::TopicPolicy denying sns:Publish to every principal but the follow-up role and the admin (a forged notification would announce a false denial in the channel)")
    except Exception as e:
        problems.append(f"ChannelTopicPolicy: cannot be resolved: {e!r}")
    # The chat channel and its role, which can do nothing.
    role = res.get("ChannelRole", {})
    props = role.get("Properties", {})
    if role.get("Type") != "AWS::IAM::Role" or props.get("RoleName") != {"Fn::Sub": "${AWS::StackName}-channel"} or props.get("Path", "/") != "/":
        problems.append("ChannelRole: must be an AWS::IAM::Role named ${AWS::StackName}-channel, path / (the SCP keeps role/ec2pass* to the admin)")
    trusted = [st.get("Principal") for st in props.get("AssumeRolePolicyDocument", {}).get("Statement", [])]
    if trusted != [{"Service": "chatbot.amazonaws.com"}]:
        problems.append(f"ChannelRole: only chatbot.amazonaws.com may assume it, found {trusted}")
    for key in ("Policies", "ManagedPolicyArns", "PermissionsBoundary"):
        if props.get(key):
            problems.append(f"ChannelRole: no {key}: the channel's role may do nothing (nobody in the channel runs AWS commands through it)")
    for n, x in res.items():
        if x.get("Type") in ("AWS::IAM::RolePolicy", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") \
                and {"Ref": "ChannelRole"} in [x.get("Properties", {}).get("RoleName"), *listed(x.get("Properties", {}).get("Roles"))]:
            problems.append(f"{n}: gives the ChannelRole a policy: the channel's role may do nothing")
    if {"Key": "ec2pass:role", "Value": "channel"} not in props.get("Tags", []):
        problems.append("ChannelRole: needs the tag ec2pass:role=channel")
    config = res.get("ChannelConfiguration", {})
    cp = config.get("Properties", {})
    if config.get("Type") != "AWS::Chatbot::SlackChannelConfiguration":
        problems.append("ChannelConfiguration: must be an AWS::Chatbot::SlackChannelConfiguration")
    if cp.get("IamRoleArn") != {"Fn::GetAtt": ["ChannelRole", "Arn"]}:
        problems.append("ChannelConfiguration: IamRoleArn must be the ChannelRole (a role that can do nothing)")
    if cp.get("GuardrailPolicies") != [DENY_ALL]:
        problems.append(f"ChannelConfiguration: GuardrailPolicies must be exactly [arn:${{AWS::Partition}}:iam::aws:policy/AWSDenyAll]: every role in the channel is capped by it, found {json.dumps(cp.get('GuardrailPolicies'))}")
    if str(cp.get("UserRoleRequired", "false")).lower() != "false":
        problems.append("ChannelConfiguration: UserRoleRequired must be false (the channel's role, not one each member picks)")
    if cp.get("SnsTopicArns") != [{"Ref": "ChannelTopic"}]:
        problems.append("ChannelConfiguration: SnsTopicArns must be exactly the ChannelTopic (never the alert topic: its JSON is no custom notification)")
    if cp.get("SlackWorkspaceId") != {"Ref": "ChatbotSlackWorkspaceId"} or cp.get("SlackChannelId") != {"Ref": "ChatbotSlackChannelId"}:
        problems.append("ChannelConfiguration: SlackWorkspaceId and SlackChannelId must be !Ref ChatbotSlackWorkspaceId and !Ref ChatbotSlackChannelId")
    if cp.get("ConfigurationName") != {"Fn::Sub": "${AWS::StackName}-channel"}:
        problems.append("ChannelConfiguration: ConfigurationName must be ${AWS::StackName}-channel")
    # Rules: a Slack channel's ids without ChannelAlerts, or one id without the other, are refused.
    for rule in ("ChatbotChannelNeedsChannelAlerts", "ChatbotChannelNeedsBothIds"):
        if rule not in template.get("Rules", {}):
            problems.append(f"Rules: {rule} is missing (a Slack channel's ids would be dropped silently)")
    # Outputs.
    for out, condition, value in (("MattermostCommandUrl", "HasMattermost", "https://example.lambda-url.us-east-1.on.aws/mattermost"),
                                  ("MattermostTokenArn", "HasMattermost", chat.ref("MattermostToken")),
                                  ("SlackBotTokenArn", "SendsSlackDirectMessages", chat.ref("SlackBotToken")),
                                  ("ChannelTopicArn", "ForwardsChannelAlerts", chat.ref("ChannelTopic"))):
        o = outputs.get(out)
        if not o:
            problems.append(f"missing output {out} (Condition {condition})")
            continue
        try:
            got = chat.value(o.get("Value"))
        except Exception as e:
            got = repr(e)
        if o.get("Condition") != condition or got != value:
            problems.append(f"output {out}: Condition {condition}, value {value!r}, found {o.get('Condition')!r}, {got!r}")
    return problems


# ---------------------------------------------------------------------------------------------
# Attribution and response (issue 14): the attribution function (binary attribution of the guard
# crate), its role, its call queue and the rules that feed it, and the optional trail. The
# spoke's forwarding of the calls is checked with the spoke (member_invariants).
# ---------------------------------------------------------------------------------------------

# The one pattern of every call rule (the hub's CallRule and HubCallRule, the spokes'
# ForwardCallsRule): CloudTrail's record of the two calls that start instances, from EC2 itself.
CALL_PATTERN = {"source": ["aws.ec2"], "detail-type": ["AWS API Call via CloudTrail"],
                "detail": {"eventSource": ["ec2.amazonaws.com"], "eventName": ["RunInstances", "StartInstances"]}}
# The response's two calls (guard/src/respond.rs, IamClient), and the only IAM writes any role of
# the stack may have.
RESPONSE_ACTIONS = ["iam:PutRolePolicy", "iam:UpdateAccessKey"]
# Everything the attribution role may do, exactly: (action, resource, LeadingKeys, "via" the
# kms:ViaService, "org" the aws:ResourceOrgID, or None), as FOLLOWUP_GRANTS. Its CloudWatch Logs
# come from AWSLambdaBasicExecutionRole. It reads no item: the code makes no GetItem.
ATTRIBUTION_GRANTS = {
    ("dynamodb:PutItem", "the table", ("call#*",)),
    ("dynamodb:UpdateItem", "the table", ("verdict#*",)),
    ("dynamodb:PutItem", "the table", ("response#*",)),
    ("dynamodb:UpdateItem", "the table", ("response#*",)),
    ("dynamodb:Query", "the by-instance index", None),
    ("sns:Publish", "the alert topic", None),
    ("kms:Decrypt", "the alert key", f"via sns.{REGION}.amazonaws.com"),
    ("kms:GenerateDataKey", "the alert key", f"via sns.{REGION}.amazonaws.com"),
    ("sqs:ReceiveMessage", "the call queue", None),
    ("sqs:DeleteMessage", "the call queue", None),
    ("sqs:GetQueueAttributes", "the call queue", None),
    ("sqs:ChangeMessageVisibility", "the call queue", None),
}
# A single account's: its own instances. A hub's: the member accounts' lookup roles, read-only.
ATTRIBUTION_LOCAL_GRANTS = {("ec2:DescribeInstances", "*", None)}
ATTRIBUTION_HUB_GRANTS = {("sts:AssumeRole", "the lookup roles", f"org {ORG_ID}")}
# With Response=on: the two calls, on this account's users and roles.
RESPONSE_GRANTS = {("iam:UpdateAccessKey", "this account's users", None), ("iam:PutRolePolicy", "this account's roles", None)}
RESPONSE_ON = {"Response": "on"}
# (what, parameters, hub?, responds?): the settings the attribution role is checked in.
ATTRIBUTION_SETTINGS = [
    ("a single account", {}, False, False),
    ("a single account with Response=on", RESPONSE_ON, False, True),
    ("a hub", HUB_UNITS_PARAMS, True, False),
    ("a hub with Response=on", {**HUB_UNITS_PARAMS, **RESPONSE_ON}, True, True),
]
# A stack and an Organization named otherwise, to see that the rails follow the parameters.
OTHER_STACK = "guardian"
OTHER_NAMES = {"AdminRoleArn": f"arn:aws:iam::{ACCOUNT}:user/alice", "MemberRoleName": "corp-member",
               "LookupRoleName": "corp-lookup", **RESPONSE_ON}
# The variables the attribution function must be given (its environment: settings_match).
ATTRIBUTION_VARIABLES = {
    "EC2PASS_TABLE": {"Ref": "Table"}, "EC2PASS_ALERT_TOPIC_ARN": {"Ref": "AlertTopic"},
    "EC2PASS_ACCOUNT": {"Ref": "AWS::AccountId"}, "EC2PASS_CALL_QUEUE_URL": {"Ref": "CallQueue"},
    "EC2PASS_RESPONSE": {"Ref": "Response"}, "EC2PASS_RESPONSE_ALLOW": {"Ref": "ResponseAllowList"},
    "EC2PASS_ADMIN_ARN": None, "EC2PASS_OWN_ROLES": None,
}
ATTRIBUTION_SOURCES = [ROOT / "guard" / "src" / "bin" / "attribution.rs", ROOT / "guard" / "src" / "respond.rs",
                       ROOT / "guard" / "src" / "attribute.rs", ROOT / "guard" / "src" / "batch.rs"]
# What exists only with CreateTrail=true.
TRAIL_ONLY = ("TrailBucket", "TrailBucketPolicy", "Trail")
# Every option on (the chat options, the response, the trail): the world the chat and response
# claims are evaluated in, and parliament reads the policies of.
OPTIONS_PARAMS = {**CHAT_PARAMS, **RESPONSE_ON, "CreateTrail": "true"}


def rust_seconds(text, pattern, what):
    """A Duration::from_secs(...) constant of the Rust source, in seconds (a product of integers)."""
    m = re.search(pattern + r"\s*Duration::from_secs\(([0-9 *]+)\)", text)
    if not m:
        raise ValueError(f"{what} not found in the Rust source")
    value = 1
    for factor in m.group(1).split("*"):
        value *= int(factor)
    return value


def hand_back_receives(first, cap, wait):
    """How many receives a call waiting `wait` seconds for its starts takes: each return hands it
    back after `first` seconds, doubling with every receive up to `cap` (guard/src/batch.rs,
    recheck_after), until it is `wait` old; then one receive more, which gives it up."""
    receives, elapsed = 0, 0
    while elapsed < wait:
        receives += 1
        elapsed += min(first * 2 ** min(receives - 1, 6), cap)
    return receives + 1


def attribution_grants(r, template):
    """The attribution role's Allow grants, resolved, as ATTRIBUTION_GRANTS; its Deny statements;
    and the problems of statements that cannot be read so."""
    table = r.getatt("Table", "Arn")
    names = {table: "the table", f"{table}/index/by-instance": "the by-instance index", r.ref("AlertTopic"): "the alert topic",
             r.getatt("AlertKey", "Arn"): "the alert key", r.getatt("CallQueue", "Arn"): "the call queue",
             f"arn:aws:iam::*:role/{r.params.get('LookupRoleName')}": "the lookup roles",
             f"arn:aws:iam::{r.account}:user/*": "this account's users", f"arn:aws:iam::{r.account}:role/*": "this account's roles"}
    grants, denies, problems = set(), [], []
    for st in ec2_or_all(resolved_policies(r, template, "AttributionRole")):
        if {"NotAction", "NotResource", "NotPrincipal"} & set(st):
            problems.append(f"AttributionRole: the statement {st.get('Sid')} must name its Action and Resource (no Not...)")
        if st.get("Effect") == "Deny":
            denies.append(st)
            continue
        cond = st.get("Condition", {})
        keys = cond.get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys")
        keys = tuple(sorted(listed(keys))) if keys is not None else None
        if keys is not None and str(cond.get("Null", {}).get("dynamodb:LeadingKeys")).lower() != "false":
            problems.append(f"AttributionRole: the statement {st.get('Sid')} needs Null dynamodb:LeadingKeys false (ForAllValues alone holds when the key is absent)")
        via = cond.get("StringEquals", {}).get("kms:ViaService")
        org = cond.get("StringEquals", {}).get("aws:ResourceOrgID")
        extra = keys if keys is not None else (f"via {via}" if via else (f"org {org}" if org else None))
        for a in actions(st):
            for x in listed(st.get("Resource")):
                grants.add((a, names.get(x, x), extra))
    return grants, denies, problems


def call_rule_problems(name, rule, bus, queue_ref, failures_ref, max_age):
    """A call rule: exactly CALL_PATTERN, enabled, on `bus`, to the call queue, briefly retried,
    what it cannot deliver to the call failure queue."""
    problems = []
    props = rule.get("Properties", {})
    if rule.get("Type") != "AWS::Events::Rule":
        return [f"{name}: missing (an AWS::Events::Rule)"]
    pattern = props.get("EventPattern", {})
    detail = pattern.get("detail", {}) if isinstance(pattern.get("detail"), dict) else {}
    if not isinstance(pattern, dict) or set(pattern) != set(CALL_PATTERN) or pattern.get("source") != CALL_PATTERN["source"] \
            or pattern.get("detail-type") != CALL_PATTERN["detail-type"] or set(detail) != set(CALL_PATTERN["detail"]) \
            or detail.get("eventSource") != CALL_PATTERN["detail"]["eventSource"] \
            or sorted(listed(detail.get("eventName"))) != CALL_PATTERN["detail"]["eventName"]:
        problems.append(f"{name}: its pattern must be exactly {json.dumps(CALL_PATTERN)} (CloudTrail's RunInstances and StartInstances from ec2.amazonaws.com, nothing wider, nothing narrower), found {json.dumps(pattern)}")
    if props.get("EventBusName", "default") != bus or props.get("State", "ENABLED") != "ENABLED":
        problems.append(f"{name}: an ENABLED rule on the {'default bus, where CloudTrail sends its calls' if bus == 'default' else 'hub bus'}")
    targets = props.get("Targets", [])
    if [t.get("Arn") for t in targets] != [queue_ref]:
        problems.append(f"{name}: its one target must be the CallQueue")
    for t in targets:
        if int(t.get("RetryPolicy", {}).get("MaximumEventAgeInSeconds", 86400)) > max_age:
            problems.append(f"{name}: the target needs a RetryPolicy with MaximumEventAgeInSeconds at most {max_age} (a call older than that tells nothing new)")
        if failures_ref is not None and t.get("DeadLetterConfig", {}).get("Arn") != failures_ref:
            problems.append(f"{name}: what it cannot deliver must go to CallFailures (DeadLetterConfig)")
    return problems


def attribution_invariants(template):
    """The attribution function and its role's exact grants in every setting; the response's IAM
    writes only with Response=on, only on this account, never on the admin, ec2pass's own roles
    or service-linked roles, and on no other role of the stack; the call rules' exact pattern; the
    call queue, long-lived enough for the function's hand-backs, open to the rules alone; and the
    trail, only with CreateTrail."""
    problems = []
    res = template.get("Resources", {})
    params = template.get("Parameters", {})
    fn = res.get("AttributionFunction", {})
    props = fn.get("Properties", {})
    if fn.get("Type") != "AWS::Serverless::Function":
        return ["AttributionFunction: missing (an AWS::Serverless::Function, binary attribution of the guard crate)"]
    for logical, kind in (("AttributionRole", "AWS::IAM::Role"), ("CallQueue", "AWS::SQS::Queue"), ("CallFailures", "AWS::SQS::Queue"),
                          ("CallRule", "AWS::Events::Rule"), ("HubCallRule", "AWS::Events::Rule")):
        if res.get(logical, {}).get("Type") != kind:
            problems.append(f"{logical}: missing (an {kind})")
    if problems:
        return problems
    # The parameters: off by default, and no trail of the stack's own unless asked for.
    for name, default, values in (("Response", "off", ["off", "on"]), ("CreateTrail", "false", ["false", "true"])):
        p = params.get(name, {})
        if str(p.get("Default")) != default or [str(v) for v in p.get("AllowedValues", [])] != values:
            problems.append(f"parameter {name}: Default {default!r}, AllowedValues {values} (quoted: YAML reads a bare on, off, true or false as a boolean), found {p.get('Default')!r}, {p.get('AllowedValues')!r}")
    allow = params.get("ResponseAllowList", {})
    if allow.get("Default", None) != "":
        problems.append("parameter ResponseAllowList: the default must be empty (only the built-in exceptions)")
    for value, ok in (("", True), (f"arn:aws:iam::{ACCOUNT}:role/ci-deploy", True),
                      (f"arn:aws:iam::{ACCOUNT}:role/ci-deploy,arn:aws:iam::{ACCOUNT}:user/break-glass*", True),
                      (f"arn:aws:sts::{ACCOUNT}:assumed-role/ops/alice", True), ("*", False), (f"arn:aws:iam::{ACCOUNT}:role/*-deploy", False),
                      (f"arn:aws:iam::{ACCOUNT}:role/a, arn:aws:iam::{ACCOUNT}:role/b", False), ("ci-deploy", False)):
        try:
            matches = re.search(allow.get("AllowedPattern", ""), value) is not None
        except re.error:
            matches = None
        if matches != ok:
            problems.append(f"parameter ResponseAllowList: its AllowedPattern must {'take' if ok else 'refuse'} {value!r} (user or role ARNs, comma-separated, no spaces, at most a trailing *: the code refuses any other)")
    conditions = template.get("Conditions", {})
    if conditions.get("RespondsToCallers") != {"Fn::Equals": [{"Ref": "Response"}, "on"]}:
        problems.append('condition RespondsToCallers must be !Equals [!Ref Response, "on"]')
    # The function: the batch path, its own capacity, and its settings.
    events = props.get("Events", {})
    queue_ref, failures_ref = {"Fn::GetAtt": ["CallQueue", "Arn"]}, {"Fn::GetAtt": ["CallFailures", "Arn"]}
    mappings = [e.get("Properties", {}) for e in events.values() if e.get("Type") == "SQS"]
    if len(events) != 1 or [m.get("Queue") for m in mappings] != [queue_ref]:
        problems.append(f"AttributionFunction: needs exactly one event, an SQS event from the CallQueue, found {sorted(e.get('Type') for e in events.values())}")
    reserved = props.get("ReservedConcurrentExecutions")
    for m in mappings:
        if "ReportBatchItemFailures" not in m.get("FunctionResponseTypes", []):
            problems.append("AttributionFunction: its SQS event needs FunctionResponseTypes ReportBatchItemFailures (the calls still waiting are handed back, the others deleted)")
        if not 1 <= int(m.get("BatchSize", 10)) <= 10:
            problems.append("AttributionFunction: its SQS event's BatchSize must be at most 10 (a small batch within the function's timeout)")
        cap = m.get("ScalingConfig", {}).get("MaximumConcurrency")
        if not isinstance(cap, int) or not isinstance(reserved, int) or not 2 <= cap <= reserved:
            problems.append("AttributionFunction: its SQS event needs ScalingConfig MaximumConcurrency from 2 (AWS's minimum) to its ReservedConcurrentExecutions (a throttled batch uses up a receive)")
    env = props.get("Environment", {}).get("Variables", {})
    for var, wanted in ATTRIBUTION_VARIABLES.items():
        if var not in env:
            problems.append(f"AttributionFunction: must set {var}")
        elif wanted is not None and env[var] != wanted:
            problems.append(f"AttributionFunction: {var} must be {json.dumps(wanted)}, found {json.dumps(env[var])}")
    if "EC2PASS_STATE_CHANGE_QUEUE_URL" in env:
        problems.append("AttributionFunction: must not be given EC2PASS_STATE_CHANGE_QUEUE_URL: it hands its calls back to the CallQueue, never to the guard's queue")
    try:
        for label, r in (("by default", Resolver(template)), ("with AdminRoleArn and the role names set", Resolver(template, OTHER_NAMES, stack=OTHER_STACK))):
            admin = r.admin_arn()
            if r.value(env.get("EC2PASS_ADMIN_ARN")) != admin:
                problems.append(f"AttributionFunction: EC2PASS_ADMIN_ARN must be the admin {admin} {label} (AdminRoleArn, or the account's role ec2pass-admin), found {r.value(env.get('EC2PASS_ADMIN_ARN'))!r}")
            own = set(str(r.value(env.get("EC2PASS_OWN_ROLES", ""))).split(","))
            wanted = {f"{r.stack}-*", r.params["MemberRoleName"], r.params["LookupRoleName"], "ec2pass*"}
            if wanted - own:
                problems.append(f"AttributionFunction: EC2PASS_OWN_ROLES must name {sorted(wanted)} {label} (this stack's roles, the member and lookup roles, every ec2pass* role), missing {sorted(wanted - own)}")
    except Exception as e:  # a broken copy can break the checks' own assumptions
        problems.append(f"AttributionFunction: its settings do not resolve: {e!r}")
    # The role: exactly its grants, in every setting; the response only with Response=on.
    role = res["AttributionRole"].get("Properties", {})
    if role.get("ManagedPolicyArns") != [BASIC_EXECUTION] or "PermissionsBoundary" in role:
        problems.append("AttributionRole: its only managed policy is AWSLambdaBasicExecutionRole (CloudWatch Logs, as the other roles)")
    for label, parameters, hub, responds in ATTRIBUTION_SETTINGS:
        r = Resolver(template, parameters)
        try:
            grants, denies, unreadable = attribution_grants(r, template)
        except Exception as e:  # a broken copy can break the checks' own assumptions
            problems.append(f"AttributionRole: its policies do not resolve in {label}: {e!r}")
            continue
        problems += unreadable
        wanted = ATTRIBUTION_GRANTS | (ATTRIBUTION_HUB_GRANTS if hub else ATTRIBUTION_LOCAL_GRANTS) | (RESPONSE_GRANTS if responds else set())
        extra, missing = sorted(grants - wanted, key=str), sorted(wanted - grants, key=str)
        if extra or missing:
            problems.append(f"AttributionRole: in {label} exactly PutItem of call# and response# items, UpdateItem of verdict# and response# items, "
                            "Query of the by-instance index, sns:Publish on the alert topic with the alert key through SNS, the four SQS actions of the call queue, "
                            + ("sts:AssumeRole of the member accounts' lookup roles in the Organization" if hub else "ec2:DescribeInstances")
                            + (", and iam:UpdateAccessKey on this account's users and iam:PutRolePolicy on its roles" if responds else " (no IAM action: Response is off)")
                            + f"; not allowed: {extra}; missing: {missing}")
        if not responds:
            if denies:
                problems.append(f"AttributionRole: in {label} no Deny is expected (nothing to keep the response off), found {[st.get('Sid') for st in denies]}")
            continue
        if len(denies) != 1 or sorted(actions(denies[0])) != RESPONSE_ACTIONS or denies[0].get("Condition"):
            problems.append(f"AttributionRole: in {label} exactly one Deny of {RESPONSE_ACTIONS}, unconditional, found {json.dumps(denies)}")
    # The Deny's resources follow the admin, the stack's name and the role names.
    for label, r in (("by default", Resolver(template, RESPONSE_ON)), ("with AdminRoleArn and the role names set", Resolver(template, OTHER_NAMES, stack=OTHER_STACK))):
        try:
            _, denies, _ = attribution_grants(r, template)
        except Exception:
            continue  # reported above
        denied = {x for st in denies for x in listed(st.get("Resource"))}
        iam = f"arn:aws:iam::{r.account}"
        wanted = {r.admin_arn(), f"{iam}:role/{r.stack}-*", f"{iam}:role/ec2pass*", f"{iam}:role/{r.params['MemberRoleName']}",
                  f"{iam}:role/{r.params['MemberRoleName']}-forward-*", f"{iam}:role/{r.params['LookupRoleName']}", f"{iam}:role/aws-service-role/*"}
        if wanted - denied:
            problems.append(f"AttributionRole: {label}, the response's Deny must cover the admin, this stack's roles, every ec2pass* role, the member, forwarding and lookup roles and the service-linked roles; missing {sorted(wanted - denied)}")
    # No other role of the stack writes anything of IAM, in any branch.
    for name, x in res.items():
        if x.get("Type") not in ("AWS::IAM::Role", "AWS::IAM::RolePolicy", "AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
            continue
        owner = x.get("Properties", {}).get("RoleName") if x.get("Type") == "AWS::IAM::RolePolicy" else None
        if name == "AttributionRole" or owner == {"Ref": "AttributionRole"}:
            continue
        docs = role_policies(template, name) if x.get("Type") == "AWS::IAM::Role" else [x.get("Properties", {}).get("PolicyDocument", {})]
        for d in docs:
            for st in d.get("Statement", []):
                found = [a for a in listed(st.get("Action")) + listed(st.get("NotAction"))
                         if isinstance(a, str) and (a == "*" or fnmatch.fnmatchcase("iam", a.split(":", 1)[0].lower()))]
                if found and st.get("Effect") != "Deny":
                    problems.append(f"{name}: may have no IAM action (only the attribution role, with Response=on, writes IAM: {RESPONSE_ACTIONS}), found {found}")
    # The rules.
    problems += call_rule_problems("CallRule", res["CallRule"], "default", queue_ref, failures_ref, 3600)
    problems += call_rule_problems("HubCallRule", res["HubCallRule"], {"Ref": "HubEventBus"}, queue_ref, failures_ref, 3600)
    for logical, name in (("CallRule", "${AWS::StackName}-calls"), ("HubCallRule", "${AWS::StackName}-hub-calls")):
        if res[logical].get("Properties", {}).get("Name") != {"Fn::Sub": name}:
            problems.append(f"{logical}: Name must be {name} (the SCP keeps rule/ec2pass-*)")
    if "Condition" in res["CallRule"] or res["HubCallRule"].get("Condition") != "IsHub":
        problems.append("CallRule: in every stack; HubCallRule: only in a hub (Condition: IsHub)")
    # The queue: SSE-SQS, six timeouts of visibility, enough receives for the hand-backs.
    q = res["CallQueue"].get("Properties", {})
    failures = res["CallFailures"].get("Properties", {})
    for logical, qp, name in (("CallQueue", q, "${AWS::StackName}-calls"), ("CallFailures", failures, "${AWS::StackName}-call-failures")):
        if qp.get("QueueName") != {"Fn::Sub": name}:
            problems.append(f"{logical}: QueueName must be {name} (the SCPs protect ec2pass-* queues, and ec2pass-*calls by name)")
        if str(qp.get("SqsManagedSseEnabled")).lower() != "true" or "KmsMasterKeyId" in qp:
            problems.append(f"{logical}: must be encrypted with SSE-SQS (SqsManagedSseEnabled; EventBridge cannot send to a queue under aws/sqs)")
    timeout = int(props.get("Timeout", template.get("Globals", {}).get("Function", {}).get("Timeout", 3)))
    if int(q.get("VisibilityTimeout", 30)) < 6 * timeout:
        problems.append(f"CallQueue: VisibilityTimeout must be at least six times the function's Timeout ({6 * timeout} s; \"Using Lambda with Amazon SQS\")")
    try:
        attribute = (ROOT / "guard" / "src" / "attribute.rs").read_text(encoding="utf-8")
        batch = (ROOT / "guard" / "src" / "batch.rs").read_text(encoding="utf-8")
        wait = rust_seconds(attribute, r"give_up:", "Settings::default().give_up")
        if "EC2PASS_ATTRIBUTION_WAIT" in env:
            wait = int(Resolver(template).value(env["EC2PASS_ATTRIBUTION_WAIT"]).rstrip("m")) * 60
        first = rust_seconds(attribute, r"recheck:", "Settings::default().recheck")
        cap = rust_seconds(batch, r"MAX_RECHECK: Duration =", "MAX_RECHECK")
        needed = hand_back_receives(first, cap, wait)
        redrive = q.get("RedrivePolicy", {})
        receives = int(redrive.get("maxReceiveCount", 0))
        if redrive.get("deadLetterTargetArn") != failures_ref or not needed <= receives <= needed + 20:
            problems.append(f"CallQueue: needs a RedrivePolicy to CallFailures with a maxReceiveCount from {needed} to {needed + 20}: the function hands a waiting call back after {first} s, doubling to {cap} s, for {wait // 60} minutes ({needed} receives), then the failure alarm; found {receives}")
        if int(q.get("MessageRetentionPeriod", 345600)) < 2 * wait:
            problems.append(f"CallQueue: MessageRetentionPeriod must be at least {2 * wait} s, twice the {wait // 60} minutes a call is waited for (a message that expires first is lost without reaching the failure queue)")
    except Exception as e:  # a broken copy can break the checks' own assumptions
        problems.append(f"CallQueue: the hand-backs cannot be read from guard/src/attribute.rs and batch.rs: {e!r}")
    if failures.get("RedriveAllowPolicy", {}).get("redrivePermission") != "byQueue":
        problems.append("CallFailures: its RedriveAllowPolicy must admit the CallQueue alone (byQueue)")
    # Who sends: the rules (a hub's too) and the admin; Principal Mapper models no service
    # principals, so the rules' right is asserted here; who else may send, take or manage is
    # evaluated by the claims.
    for label, r in (("", Resolver(template)), ("in a hub, ", Resolver(template, HUB_PARAMS))):
        rules = [r.getatt("CallRule", "Arn")] + ([r.getatt("HubCallRule", "Arn")] if r.condition("IsHub") else [])
        for logical in ("CallQueue", "CallFailures"):
            docs = [r.value(x["Properties"].get("PolicyDocument", {})) for x in res.values() if x.get("Type") == "AWS::SQS::QueuePolicy"
                    and {"Ref": logical} in x.get("Properties", {}).get("Queues", [])]
            sts = [st for d in docs for st in d.get("Statement", [])]
            sends = [st for st in sts if st.get("Effect") == "Allow" and "sqs:SendMessage" in actions(st)]
            if len(docs) != 1 or not sends or any(set(rules) - set(listed(st.get("Condition", {}).get("ArnEquals", {}).get("aws:SourceArn"))) for st in sends):
                problems.append(f"{logical}: {label}needs one AWS::SQS::QueuePolicy letting events.amazonaws.com sqs:SendMessage with aws:SourceArn the call rules {rules}")
            for st in sts:
                if st.get("Effect") == "Allow" and (st.get("Principal") != {"Service": "events.amazonaws.com"} or actions(st) != ["sqs:SendMessage"]
                                                    or set(listed(st.get("Condition", {}).get("ArnEquals", {}).get("aws:SourceArn"))) != set(rules)):
                    problems.append(f"{logical}: {label}its queue policy's Allow {st.get('Sid')} must let only EventBridge send, for the call rules alone (a forged call could pin a deny on anyone, and cut them off), found {json.dumps(st)}")
                if st.get("Effect") == "Deny" and "sqs:SendMessage" in actions(st) \
                        and set(rules) - set(listed(st.get("Condition", {}).get("ArnNotEquals", {}).get("aws:SourceArn"))):
                    problems.append(f"{logical}: {label}the queue policy's Deny {st.get('Sid')} of sqs:SendMessage must except the call rules (ArnNotEquals aws:SourceArn), or no call arrives")
    if not any(x.get("Type") == "AWS::SQS::QueuePolicy" and {"Ref": "CallQueue"} in x.get("Properties", {}).get("Queues", [])
               and any(st.get("Effect") == "Deny" and st.get("Principal") == "*" and "sqs:SendMessage" in actions(st)
                       for st in x["Properties"].get("PolicyDocument", {}).get("Statement", [])) for x in res.values()):
        problems.append("CallQueuePolicy: needs a Deny of sqs:SendMessage to everyone but the call rules and the admin (a forged call could pin a deny on anyone, and cut them off)")
    # The trail: only with CreateTrail; every region, management events, a private TLS-only bucket.
    for logical in TRAIL_ONLY:
        if res.get(logical, {}).get("Condition") != "CreatesTrail":
            problems.append(f"{logical}: must exist only with CreateTrail=true (Condition: CreatesTrail): most Organizations have an organization trail")
    if conditions.get("CreatesTrail") != {"Fn::Equals": [{"Ref": "CreateTrail"}, "true"]}:
        problems.append('condition CreatesTrail must be !Equals [!Ref CreateTrail, "true"]')
    r = Resolver(template, {"CreateTrail": "true"})
    try:
        trail = r.value(res.get("Trail", {}).get("Properties", {}))
        selectors = trail.get("EventSelectors", [{}])
        if str(trail.get("IsMultiRegionTrail")).lower() != "true" or str(trail.get("IsLogging")).lower() != "true" \
                or not any(str(s.get("IncludeManagementEvents", True)).lower() == "true" and s.get("ReadWriteType", "All") in ("All", "WriteOnly")
                           for s in selectors) or trail.get("S3BucketName") != r.ref("TrailBucket"):
            problems.append(f"Trail: must log, in every region (IsMultiRegionTrail), the management events that are writes (RunInstances, StartInstances), into the TrailBucket, found {json.dumps(trail)}")
        bucket = r.value(res.get("TrailBucket", {}).get("Properties", {}))
        block = bucket.get("PublicAccessBlockConfiguration", {})
        if not all(str(block.get(k)).lower() == "true" for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")) \
                or not bucket.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration"):
            problems.append("TrailBucket: needs server-side encryption and a PublicAccessBlockConfiguration with all four settings true")
        policy = r.value(res.get("TrailBucketPolicy", {}).get("Properties", {}))
        trail_arn = f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/{r.value(res['Trail']['Properties'].get('TrailName'))}"
        sts = policy.get("PolicyDocument", {}).get("Statement", [])
        if policy.get("Bucket") != r.ref("TrailBucket") or not any(
                st.get("Effect") == "Deny" and st.get("Principal") == "*" and listed(st.get("Action")) == ["s3:*"]
                and str(st.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")).lower() == "false" for st in sts):
            problems.append("TrailBucketPolicy: the TrailBucket's policy needs a Deny of s3:* to Principal * without aws:SecureTransport (TLS only)")
        for st in sts:
            if st.get("Effect") == "Allow" and (st.get("Principal") != {"Service": "cloudtrail.amazonaws.com"}
                                                or st.get("Condition", {}).get("StringEquals", {}).get("aws:SourceArn") != trail_arn):
                problems.append(f"TrailBucketPolicy: the Allow {st.get('Sid')} must be for cloudtrail.amazonaws.com and this trail alone (StringEquals aws:SourceArn {trail_arn}), found {json.dumps(st)}")
        if sorted(a for st in sts if st.get("Effect") == "Allow" for a in listed(st.get("Action"))) != ["s3:GetBucketAcl", "s3:PutObject"]:
            problems.append("TrailBucketPolicy: CloudTrail needs exactly s3:GetBucketAcl on the bucket and s3:PutObject under AWSLogs/<account>/")
    except Exception as e:  # a broken copy can break the checks' own assumptions
        problems.append(f"Trail: the trail and its bucket do not resolve with CreateTrail=true: {e!r}")
    outputs = template.get("Outputs", {})
    for out, value in (("CallFailureQueueArn", failures_ref), ("CallQueueArn", queue_ref)):
        if outputs.get(out, {}).get("Value") != value:
            problems.append(f"missing output {out} (the re-drive's source and destination: docs/operations.md)")
    return problems


# ---------------------------------------------------------------------------------------------
# The Organization (issue 12): the hub's part of infra/template.yaml, the spoke (infra/member.yaml)
# and the StackSet (infra/organization.yaml).
# ---------------------------------------------------------------------------------------------

# The environment a hub sets, and the parameter behind each variable (docs/configuration.md).
ORG_VARIABLES = {
    "GuardFunction": {"EC2PASS_MEMBER_ROLE": "MemberRoleName", "EC2PASS_ACCOUNTS": "MemberAccounts",
                      "EC2PASS_ORG_UNITS": "OrganizationUnits", "EC2PASS_REGIONS": "GuardedRegions"},
    "IssuerFunction": {"EC2PASS_LOOKUP_ROLE": "LookupRoleName", "EC2PASS_ACCOUNTS": "MemberAccounts",
                       "EC2PASS_ORG_UNITS": "OrganizationUnits", "EC2PASS_REGIONS": "GuardedRegions",
                       "EC2PASS_ACCOUNT_USERS": "AccountUsers"},
    # The attribution finds a call's instances through the read-only lookup role, not the member
    # role the guard acts through (Hub::from_env reads the role from EC2PASS_MEMBER_ROLE).
    "AttributionFunction": {"EC2PASS_MEMBER_ROLE": "LookupRoleName", "EC2PASS_ACCOUNTS": "MemberAccounts",
                            "EC2PASS_ORG_UNITS": "OrganizationUnits", "EC2PASS_REGIONS": "GuardedRegions"},
}
HUB_ONLY = ("HubEventBus", "HubEventBusPolicy", "HubStateChange", "HubStateChangeRuleFailuresAlarm", "HubCallRule")
# Each hop of a forwarded state change (the spoke's rule, the hub bus's rule) retries for at most
# this long, so that the two together stay within the 600 s of a local one.
HOP_AGE = 300


def resolved_policies(r, template, role):
    """The policy documents a role has, resolved: inline ones whose condition holds, and every
    AWS::IAM::RolePolicy naming the role that exists with r's parameters."""
    res = template.get("Resources", {})
    props = res.get(role, {}).get("Properties", {})
    docs = [p["PolicyDocument"] for p in r.value(props.get("Policies", []))]
    for name, x in res.items():
        if x.get("Type") == "AWS::IAM::RolePolicy" and x.get("Properties", {}).get("RoleName") == {"Ref": role} \
                and r.exists(name):
            docs.append(r.value(x["Properties"]["PolicyDocument"]))
    return docs


def ec2_statements(docs):
    return [st for d in docs for st in d.get("Statement", []) if any(a.startswith("ec2:") for a in actions(st))]


def canonical(statement):
    """A statement with its resources' region and account made generic, as text: the hub guard
    role's EC2 statements name its own region, the member role's any region of its account."""
    st = copy.deepcopy(statement)
    if "Resource" in st:
        out = []
        for arn in listed(st["Resource"]):
            parts = arn.split(":", 5)
            if len(parts) == 6 and parts[0] == "arn":
                parts[3], parts[4] = "*", "<own account>"
            out.append(":".join(parts))
        st["Resource"] = out
    for key in ("Action", "NotAction"):
        if key in st:
            st[key] = sorted(listed(st[key]))
    return json.dumps(st, sort_keys=True)


def pattern_problems(name, pattern):
    """The one event pattern every state-change rule uses: EC2 starts, pending and running."""
    detail = pattern.get("detail", {}) if isinstance(pattern.get("detail"), dict) else {}
    if pattern.get("source") != ["aws.ec2"] or pattern.get("detail-type") != ["EC2 Instance State-change Notification"] \
            or sorted(detail.get("state", [])) != ["pending", "running"] or set(pattern) - {"source", "detail-type", "detail"} \
            or set(detail) - {"state"}:
        return [f"{name}: its pattern must be EC2 Instance State-change Notifications from aws.ec2 to pending and running, and nothing narrower (as GuardFunctionStateChange's), found {json.dumps(pattern)}"]
    return []


def bus_policy_statements(r, template):
    """The resolved statements of every policy on HubEventBus."""
    res = template.get("Resources", {})
    out = []
    bus_policy = res.get("HubEventBus", {}).get("Properties", {}).get("Policy")
    if bus_policy:
        out += r.value(bus_policy).get("Statement", [])
    for x in res.values():
        props = x.get("Properties", {})
        if x.get("Type") != "AWS::Events::EventBusPolicy" or props.get("EventBusName") != {"Ref": "HubEventBus"}:
            continue
        if "Statement" in props:
            out += [dict(r.value(props["Statement"]), Sid=props.get("StatementId"))]
        else:  # the older Principal / Action / Condition form
            cond = r.value(props.get("Condition", {}))
            out.append({"Sid": props.get("StatementId"), "Effect": "Allow", "Principal": r.value(props.get("Principal")),
                        "Action": r.value(props.get("Action")),
                        "Condition": {cond["Type"]: {cond["Key"]: cond["Value"]}} if cond else {}})
    return out


def hub_invariants(template):
    """The hub: nothing of it unless OrganizationId is set, and then an Organization-only bus into
    the same queue, and roles that assume exactly the member accounts' roles."""
    problems = []
    res = template.get("Resources", {})
    params = template.get("Parameters", {})
    for name, default in (("OrganizationId", ""), ("MemberAccounts", ""), ("OrganizationUnits", ""), ("GuardedRegions", ""),
                          ("MemberRoleName", "ec2pass-member"), ("LookupRoleName", "ec2pass-lookup"), ("AccountUsers", "")):
        if name not in params:
            problems.append(f"missing parameter {name} (the Organization: docs/organization.md)")
        elif str(params[name].get("Default")) != default:
            problems.append(f"parameter {name}: the default must be {default!r} (by default the single-account deploy is exactly as before)")
    if template.get("Conditions", {}).get("IsHub") != {"Fn::Not": [{"Fn::Equals": [{"Ref": "OrganizationId"}, ""]}]}:
        return problems + ['condition IsHub must be !Not [!Equals [!Ref OrganizationId, ""]]']
    for rule in ("HubSettingsNeedAnOrganization", "AnOrganizationNeedsAccountsAndRegions"):
        if rule not in template.get("Rules", {}):
            problems.append(f"Rules: {rule} is missing (hub settings without an Organization are dropped silently, an Organization without accounts or regions fails the cold start: refuse both at deploy time)")
    if problems:
        return problems
    single, hub, units = Resolver(template), Resolver(template, HUB_PARAMS), Resolver(template, HUB_UNITS_PARAMS)
    # By default nothing of the hub exists and the functions run as before.
    for logical in HUB_ONLY:
        if logical not in res:
            problems.append(f"{logical}: missing (the hub: docs/organization.md)")
        elif res[logical].get("Condition") != "IsHub":
            problems.append(f"{logical}: must exist only in a hub (Condition: IsHub), so that the single-account deploy is unchanged")
    for fn, variables in ORG_VARIABLES.items():
        env = res.get(fn, {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
        for var, param in variables.items():
            if var not in env:
                problems.append(f"{fn}: must set {var}, from {param} in a hub and empty otherwise")
                continue
            if single.value(env[var]) != "":
                problems.append(f"{fn}: {var} must be empty unless OrganizationId is set (empty is unset: one account, one region)")
            # A hub with MemberAccounts only (OrganizationUnits empty), and one reading the Organization.
            for r in (hub, units):
                if r.value(env[var]) != r.params[param]:
                    problems.append(f"{fn}: {var} must be {param} in a hub{' with OrganizationUnits' if r is units else ''}, found {r.value(env[var])!r}")
    for fn, wanted in (("GuardFunction", "MemberRoleName"), ("IssuerFunction", "LookupRoleName"), ("AttributionFunction", "LookupRoleName")):
        role = role_of(res.get(fn, {}))
        if not role or role not in res:
            continue
        if any(a.startswith("sts:") for st in ec2_or_all(resolved_policies(single, template, role)) for a in actions(st)):
            problems.append(f"{role}: may assume roles only in a hub (a policy under IsHub)")
        sts = [st for d in resolved_policies(hub, template, role) for st in d.get("Statement", [])
               if any(a.startswith("sts:") or a == "*" for a in actions(st))]
        target = f"arn:aws:iam::*:role/{hub.params[wanted]}"
        if len(sts) != 1 or actions(sts[0]) != ["sts:AssumeRole"] or listed(sts[0].get("Resource")) != [target]:
            problems.append(f"{role}: in a hub, exactly one statement with sts:AssumeRole, on {target} (the {wanted} of every member account) and no other role, found {sts}")
        for st in sts:
            if st.get("Condition", {}).get("StringEquals", {}).get("aws:ResourceOrgID") != ORG_ID:
                problems.append(f"{role}: its sts:AssumeRole needs Condition StringEquals aws:ResourceOrgID = OrganizationId (a role so named in an account outside the Organization is never assumed)")
    # The bus admits the Organization only.
    bus = res.get("HubEventBus", {})
    if bus.get("Type") != "AWS::Events::EventBus" or bus.get("Properties", {}).get("Name") != {"Fn::Sub": "${AWS::StackName}-hub"}:
        problems.append("HubEventBus: must be an AWS::Events::EventBus named ${AWS::StackName}-hub (the spokes' HubEventBusName; the SCPs name event-bus/ec2pass-hub)")
    bus_statements = bus_policy_statements(hub, template)
    if not any(st.get("Effect") == "Allow" and "events:PutEvents" in actions(st) for st in bus_statements):
        problems.append("HubEventBus: needs a policy letting the Organization events:PutEvents (AWS::Events::EventBusPolicy), or no member account's state change arrives")
    for st in bus_statements:
        if st.get("Effect") != "Allow":
            continue
        if st.get("Condition", {}).get("StringEquals", {}).get("aws:PrincipalOrgID") != ORG_ID:
            problems.append(f"HubEventBusPolicy: the statement {st.get('Sid')} lets principals put events on the hub bus without Condition StringEquals aws:PrincipalOrgID = OrganizationId (anyone's events would reach the guard's queue)")
        if actions(st) != ["events:PutEvents"]:
            problems.append(f"HubEventBusPolicy: the Organization may only events:PutEvents on the hub bus, found {actions(st)}")
    # Its rule: the same pattern into the same queue, at most HOP_AGE, then the failure queue.
    rule = res.get("HubStateChange", {})
    props = rule.get("Properties", {})
    if rule.get("Type") != "AWS::Events::Rule" or props.get("EventBusName") != {"Ref": "HubEventBus"}:
        problems.append("HubStateChange: must be an AWS::Events::Rule on the HubEventBus")
    if props.get("Name") != {"Fn::Sub": "${AWS::StackName}-hub-state-changes"}:
        problems.append("HubStateChange: Name must be ${AWS::StackName}-hub-state-changes (its alarm names it; the SCP keeps rule/ec2pass-*)")
    problems += pattern_problems("HubStateChange", props.get("EventPattern", {}))
    targets = props.get("Targets", [])
    if [x.get("Arn") for x in targets] != [{"Fn::GetAtt": ["StateChangeQueue", "Arn"]}]:
        problems.append("HubStateChange: its one target must be the StateChangeQueue (one queue, one guard, one batch path for every account)")
    for target in targets:
        if int(target.get("RetryPolicy", {}).get("MaximumEventAgeInSeconds", 86400)) > HOP_AGE:
            problems.append(f"HubStateChange: the target needs a RetryPolicy with MaximumEventAgeInSeconds at most {HOP_AGE} (with the spoke's hop, the 600 s a local state change takes at most)")
        if target.get("DeadLetterConfig", {}).get("Arn") != {"Fn::GetAtt": ["GuardFailures", "Arn"]}:
            problems.append("HubStateChange: what it cannot deliver must go to GuardFailures (DeadLetterConfig)")
    # Both queues admit the hub bus's rule too.
    hub_rule = hub.getatt("HubStateChange", "Arn")
    for logical in ("StateChangeQueue", "GuardFailures"):
        docs = [hub.value(r["Properties"].get("PolicyDocument", {})) for r in res.values() if r.get("Type") == "AWS::SQS::QueuePolicy"
                and {"Ref": logical} in r.get("Properties", {}).get("Queues", [])]
        sts = [st for d in docs for st in d.get("Statement", []) if "sqs:SendMessage" in actions(st)]
        if not any(st.get("Effect") == "Allow" and hub_rule in listed(st.get("Condition", {}).get("ArnEquals", {}).get("aws:SourceArn")) for st in sts):
            problems.append(f"{logical}: in a hub, its queue policy must let the rule HubStateChange send too (aws:SourceArn), or no member account's state change arrives")
        for st in sts:
            if st.get("Effect") == "Deny" and hub_rule not in listed(st.get("Condition", {}).get("ArnNotEquals", {}).get("aws:SourceArn")):
                problems.append(f"{logical}: in a hub, the queue policy's Deny {st.get('Sid')} of sqs:SendMessage must except the rule HubStateChange too")
    alarm = res.get("HubStateChangeRuleFailuresAlarm", {}).get("Properties", {})
    if alarm.get("MetricName") != "FailedInvocations" or sorted(alarm.get("Dimensions", []), key=json.dumps) != sorted(
            [{"Name": "EventBusName", "Value": {"Ref": "HubEventBus"}},
             {"Name": "RuleName", "Value": {"Fn::Sub": "${AWS::StackName}-hub-state-changes"}}], key=json.dumps):
        problems.append("HubStateChangeRuleFailuresAlarm: must alarm on AWS/Events FailedInvocations of the hub bus's rule (dimensions EventBusName and RuleName: a rule on a custom bus reports under both)")
    outputs = template.get("Outputs", {})
    for out in ("HubEventBusArn", "GuardRoleArn", "IssuerRoleArn"):
        if outputs.get(out, {}).get("Condition") != "IsHub":
            problems.append(f"missing output {out} (Condition: IsHub): the spokes and docs/organization.md name it")
    problems += org_units_invariants(template)
    problems += rules_invariants(template)
    return problems


def organizations_actions(value):
    """Every organizations: action (or wildcard that reaches one: *, organizations:*, organizatio*:...)
    named anywhere in a template fragment, both branches of every If included."""
    found = []

    def walk(v, key=None):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, k)
        elif isinstance(v, list):
            for x in v:
                walk(x, key)
        elif isinstance(v, str) and key in ("Action", "NotAction"):
            prefix = v.split(":", 1)[0].lower()
            if v == "*" or fnmatch.fnmatchcase("organizations", prefix):
                found.append(v)

    walk(value)
    return found


def org_units_invariants(template):
    """A hub with OrganizationUnits reads its member accounts from AWS Organizations: its guard and
    its issuer get EC2PASS_ORG_UNITS and exactly the two read-only calls the code makes
    (ORG_READS), on "*"; every other stack (a hub with MemberAccounts only, a single account)
    gets an empty EC2PASS_ORG_UNITS and no Organizations action at all."""
    problems = []
    res = template.get("Resources", {})
    params = template.get("Parameters", {})
    if "OrganizationUnits" not in params:
        return ["missing parameter OrganizationUnits (a hub reading its accounts from AWS Organizations: docs/organization.md)"]
    pattern = params["OrganizationUnits"].get("AllowedPattern", "")
    for value, ok in (("", True), ("ou-ab12-cdefgh34", True), ("r-ab12", True), (ORG_UNITS, True),
                      ("ou-ab12-cdefgh34, r-ab12", False), ("o-a1b2c3d4e5", False), ("123456789012", False), ("ou-ab12", False)):
        try:
            matches = re.search(pattern, value) is not None
        except re.error:
            matches = None
        if matches != ok:
            problems.append(f"parameter OrganizationUnits: its AllowedPattern must {'take' if ok else 'refuse'} {value!r} (OU ids ou-..., root ids r-..., comma-separated, no spaces)")
    settings = {  # label -> (parameters, reads the Organization?)
        "a single account": ({}, False),
        "a hub with MemberAccounts only": (HUB_PARAMS, False),
        "a hub with OrganizationUnits": (HUB_UNITS_PARAMS, True),
        "OrganizationUnits without OrganizationId (the Rules refuse it)": ({"OrganizationUnits": ORG_UNITS}, False),
    }
    for label, (parameters, reads) in settings.items():
        r = Resolver(template, parameters)
        try:
            for fn in ("GuardFunction", "IssuerFunction", "AttributionFunction"):
                env = res.get(fn, {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
                if "EC2PASS_ORG_UNITS" in env:
                    wanted = ORG_UNITS if reads else ""
                    if r.value(env["EC2PASS_ORG_UNITS"]) != wanted:
                        problems.append(f"{fn}: in {label} EC2PASS_ORG_UNITS must be {wanted!r}, found {r.value(env['EC2PASS_ORG_UNITS'])!r}"
                                        + (" (!If [ReadsOrganization, !Ref OrganizationUnits, \"\"])" if reads else ""))
                role = role_of(res.get(fn, {}))
                if not role or role not in res:
                    continue
                sts = [st for d in resolved_policies(r, template, role) for st in d.get("Statement", [])]
                org = [st for st in sts if organizations_actions({"Action": st.get("Action", []), "NotAction": st.get("NotAction", [])})]
                # The attribution reads no Organization: it never sweeps, so needs no roster.
                if not reads or fn == "AttributionFunction":
                    if org:
                        problems.append(f"{role}: in {label} it must carry no Organizations action (only a hub with OrganizationUnits reads the Organization: a policy under ReadsOrganization), found {[actions(st) for st in org]}")
                    continue
                if len(org) != 1 or sorted(actions(org[0])) != sorted(ORG_READS) or "NotAction" in org[0] \
                        or listed(org[0].get("Resource")) != ["*"] or org[0].get("Effect") != "Allow":
                    problems.append(f"{role}: in {label}, exactly one statement allowing exactly {ORG_READS} on \"*\" (the two calls the code makes, and nothing else of the Organization), found {json.dumps(org)}")
        except Exception as e:  # a broken copy can break the checks' own assumptions
            problems.append(f"OrganizationUnits: the template cannot be resolved for {label}: {e!r}")
    # Nowhere in the template any other Organizations action, in any branch.
    for name, r in res.items():
        for a in organizations_actions(r):
            if a not in ORG_READS:
                problems.append(f"{name}: the only Organizations actions a hub may have are {ORG_READS}, found {a}")
    return problems


def rules_refusals(template, parameters):
    """The AssertDescriptions of the template's Rules that refuse these parameters, as CloudFormation
    evaluates them before a deploy (only the functions the hub's Rules use: Equals, Not, And, Or)."""
    r = Resolver(template, parameters)

    def truth(expression):
        v = r.value(expression)
        if not isinstance(v, bool):
            raise ValueError(f"cannot evaluate {json.dumps(expression)}")
        return v

    refused = []
    for name, rule in template.get("Rules", {}).items():
        if "RuleCondition" in rule and not truth(rule["RuleCondition"]):
            continue
        for a in rule.get("Assertions", []):
            if not truth(a.get("Assert")):
                refused.append(f"{name}: {a.get('AssertDescription', '')}")
    return refused


# (what, parameters, refused?): the settings the hub's Rules must accept, and those they must refuse
# at deploy time rather than have the functions fail their cold start or drop a setting silently.
RULE_CASES = [
    ("a single account", {}, False),
    ("a hub with MemberAccounts", HUB_PARAMS, False),
    ("a hub with MemberAccounts and OrganizationUnits", HUB_UNITS_PARAMS, False),
    ("a hub with OrganizationUnits and no MemberAccounts", {**HUB_UNITS_PARAMS, "MemberAccounts": ""}, False),
    ("OrganizationUnits without OrganizationId", {"OrganizationUnits": ORG_UNITS}, True),
    ("MemberAccounts without OrganizationId", {"MemberAccounts": HUB_PARAMS["MemberAccounts"]}, True),
    ("OrganizationId without MemberAccounts or OrganizationUnits", {**HUB_PARAMS, "MemberAccounts": ""}, True),
    ("OrganizationId without GuardedRegions", {**HUB_UNITS_PARAMS, "GuardedRegions": ""}, True),
    # The chat channel (issue 13).
    ("every chat option, with a Slack channel", CHAT_PARAMS, False),
    ("ChannelAlerts without a Slack channel", {"ChannelAlerts": "Enabled"}, False),
    ("a Slack channel's ids without ChannelAlerts", {**CHAT_PARAMS, "ChannelAlerts": "Disabled"}, True),
    ("a Slack workspace without a channel", {**CHAT_PARAMS, "ChatbotSlackChannelId": ""}, True),
    ("a Slack channel without a workspace", {**CHAT_PARAMS, "ChatbotSlackWorkspaceId": ""}, True),
    # The response (issue 14).
    ("Response=on with an allow-list", {"Response": "on", "ResponseAllowList": f"arn:aws:iam::{ACCOUNT}:role/ci-deploy"}, False),
    ("an allow-list without Response=on", {"ResponseAllowList": f"arn:aws:iam::{ACCOUNT}:role/ci-deploy"}, True),
]


def rules_invariants(template):
    problems = []
    for what, parameters, refused in RULE_CASES:
        try:
            got = rules_refusals(template, parameters)
        except Exception as e:
            problems.append(f"Rules: cannot be evaluated for {what}: {e!r}")
            continue
        if refused and not got:
            problems.append(f"Rules: must refuse {what} at deploy time, but accept it")
        if not refused and got:
            problems.append(f"Rules: must accept {what}, but refuse it: {got}")
    return problems


def ec2_or_all(docs):
    return [st for d in docs for st in d.get("Statement", [])]


def member_invariants(template, member):
    """The spoke: the member role is the hub guard role's EC2 part and trusts only that role; the
    lookup role reads and trusts only the issuer's; every region forwards the same pattern to the
    hub bus, with a role of its own."""
    problems = []
    if not member:
        return ["infra/member.yaml: missing or empty"]
    if "Transform" in member:
        problems.append("infra/member.yaml: must not use a Transform (StackSets run none with their default execution role)")
    res = member.get("Resources", {})
    params = member.get("Parameters", {})
    hub_params = template.get("Parameters", {})
    wanted = {"HubAccountId": None, "HubRegion": None, "HubStackName": STACK, "HubEventBusName": f"{STACK}-hub",
              "OrganizationId": None, "MemberRoleName": "ec2pass-member", "LookupRoleName": "ec2pass-lookup",
              "UnstoppableAction": "terminate", "ClearStopProtection": "true"}
    for name, default in wanted.items():
        if name not in params:
            problems.append(f"infra/member.yaml: missing parameter {name}")
        elif default is not None and str(params[name].get("Default")) != default:
            problems.append(f"infra/member.yaml: parameter {name}: the default must be {default!r}, the hub's")
    for name in ("MemberRoleName", "LookupRoleName", "UnstoppableAction", "ClearStopProtection"):
        for key in ("AllowedValues", "AllowedPattern"):
            if params.get(name, {}).get(key) != hub_params.get(name, {}).get(key):
                problems.append(f"infra/member.yaml: parameter {name} must take the values the hub's does ({key})")
    if member.get("Conditions", {}).get("InHubRegion") != {"Fn::Equals": [{"Ref": "AWS::Region"}, {"Ref": "HubRegion"}]}:
        problems.append("infra/member.yaml: condition InHubRegion must be !Equals [!Ref AWS::Region, !Ref HubRegion] (IAM is global: the roles once per account)")
    for logical, kind, cond in (("MemberRole", "AWS::IAM::Role", "InHubRegion"), ("LookupRole", "AWS::IAM::Role", "InHubRegion"),
                                ("ForwardRole", "AWS::IAM::Role", None), ("ForwardRule", "AWS::Events::Rule", None),
                                ("ForwardCallsRule", "AWS::Events::Rule", None)):
        r = res.get(logical)
        if not r or r.get("Type") != kind:
            problems.append(f"infra/member.yaml: {logical} ({kind}) is missing")
        elif r.get("Condition") != cond:
            problems.append(f"infra/member.yaml: {logical}: " + (
                "only in the hub's region (Condition: InHubRegion): a StackSet makes a stack per region, and a role's name is the account's, not the region's"
                if cond else "in every region (no Condition): each region forwards its own state changes"))
    if problems:
        return problems
    here = Resolver(member, SPOKE_PARAMS, where=pseudo(MEMBER_ACCOUNT, REGION))
    guard_arn, issuer_arn = f"arn:aws:iam::{ACCOUNT}:role/{STACK}-guard", f"arn:aws:iam::{ACCOUNT}:role/{STACK}-issuer"
    attribution_arn = f"arn:aws:iam::{ACCOUNT}:role/{STACK}-attribution"
    bus_arn = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{STACK}-hub"
    try:
        # The roles: named as the hub assumes them, trusted by exactly the hub's roles that read
        # (the lookup role: the issuer and the attribution) or act (the member role: the guard).
        for logical, name_param, principal, who in (("MemberRole", "MemberRoleName", [guard_arn], "guard"),
                                                    ("LookupRole", "LookupRoleName", [issuer_arn, attribution_arn], "issuer and attribution")):
            props = res[logical].get("Properties", {})
            if props.get("RoleName") != {"Ref": name_param}:
                problems.append(f"infra/member.yaml: {logical}: RoleName must be !Ref {name_param} (the hub assumes it by that name; the SCP protects it by name)")
            if props.get("Path", "/") != "/":
                problems.append(f"infra/member.yaml: {logical}: must have path / (the hub names arn:aws:iam::*:role/<name>)")
            for key in ("ManagedPolicyArns", "PermissionsBoundary"):
                if key in props:
                    problems.append(f"infra/member.yaml: {logical}: no {key}: its permissions are the statements written here, and nothing a managed policy may add")
            trust = here.value(props.get("AssumeRolePolicyDocument", {})).get("Statement", [])
            trusted = trust[0].get("Principal", {}) if len(trust) == 1 else {}
            if len(trust) != 1 or trust[0].get("Effect") != "Allow" or listed(trust[0].get("Action")) != ["sts:AssumeRole"] \
                    or not isinstance(trusted, dict) or set(trusted) != {"AWS"} or sorted(listed(trusted.get("AWS"))) != sorted(principal) \
                    or "NotPrincipal" in trust[0]:
                problems.append(f"infra/member.yaml: {logical}: only the hub's {who} role{'s' if len(principal) > 1 else ''} may assume it - one statement, Principal AWS {principal}, never an account root or *; found {json.dumps(trust)}")
            for st in trust:
                if st.get("Condition", {}).get("StringEquals", {}).get("aws:PrincipalOrgID") != ORG_ID:
                    problems.append(f"infra/member.yaml: {logical}: its trust needs Condition StringEquals aws:PrincipalOrgID = OrganizationId (only while the hub is in the Organization)")
        # The member role: the hub guard role's EC2 statements, under the same settings.
        for action in ("terminate", "alert-only"):
            for clear in ("true", "false"):
                settings = {"UnstoppableAction": action, "ClearStopProtection": clear}
                hub_ec2 = ec2_statements(resolved_policies(Resolver(template, settings), template, "GuardRole"))
                mine = ec2_or_all(resolved_policies(Resolver(member, {**SPOKE_PARAMS, **settings}, where=pseudo(MEMBER_ACCOUNT, REGION)),
                                                    member, "MemberRole"))
                extra = sorted(set(map(canonical, mine)) - set(map(canonical, hub_ec2)))
                missing = sorted(set(map(canonical, hub_ec2)) - set(map(canonical, mine)))
                if extra or missing or len(mine) != len(hub_ec2):
                    problems.append(f"infra/member.yaml: MemberRole must carry exactly the hub GuardRole's EC2 statements (in any region of its own account), with UnstoppableAction={action}, ClearStopProtection={clear}; not in the hub's: {extra}; missing: {missing}")
        mine = ec2_or_all(resolved_policies(here, member, "MemberRole"))
        for st in mine:
            for a in actions(st):
                if a == "*" or "*" in a.split(":", 1)[-1]:
                    problems.append(f"infra/member.yaml: MemberRole: wildcard action {a}")
            if "ec2:DeleteTags" in actions(st):
                cond = st.get("Condition", {})
                if cond.get("ForAllValues:StringEquals", {}).get("aws:TagKeys") not in (["Auth"], "Auth") \
                        or str(cond.get("Null", {}).get("aws:TagKeys")).lower() != "false":
                    problems.append("infra/member.yaml: MemberRole: DeleteTags only of Auth (ForAllValues:StringEquals aws:TagKeys [Auth], and Null aws:TagKeys false: a DeleteTags without tags deletes every tag)")
        granted = [(a, tuple(listed(st.get("Resource"))), st.get("Effect")) for st in ec2_or_all(resolved_policies(here, member, "LookupRole"))
                   for a in actions(st)]
        if granted != [("ec2:DescribeInstances", ("*",), "Allow")]:
            problems.append(f"infra/member.yaml: LookupRole may only ec2:DescribeInstances (the issuer finds an instance and can do nothing to it), found {granted}")
        # The forwarding role: one per region, this account's EventBridge only, the hub bus only.
        props = res["ForwardRole"].get("Properties", {})
        if props.get("RoleName") != {"Fn::Sub": "${MemberRoleName}-forward-${AWS::Region}"}:
            problems.append("infra/member.yaml: ForwardRole: RoleName must be ${MemberRoleName}-forward-${AWS::Region} - one role per region (a role's name is the account's; a StackSet's regions run in no guaranteed order), and the SCP keeps role/ec2pass-member*")
        trust = here.value(props.get("AssumeRolePolicyDocument", {})).get("Statement", [])
        if len(trust) != 1 or trust[0].get("Effect") != "Allow" or listed(trust[0].get("Action")) != ["sts:AssumeRole"] \
                or trust[0].get("Principal") != {"Service": "events.amazonaws.com"} \
                or trust[0].get("Condition", {}).get("StringEquals", {}).get("aws:SourceAccount") != MEMBER_ACCOUNT:
            problems.append(f"infra/member.yaml: ForwardRole: only this account's EventBridge may assume it (events.amazonaws.com with Condition StringEquals aws:SourceAccount = AWS::AccountId), found {json.dumps(trust)}")
        granted = [(a, x, st.get("Effect")) for st in ec2_or_all(resolved_policies(here, member, "ForwardRole"))
                   for a in actions(st) for x in listed(st.get("Resource"))]
        if granted != [("events:PutEvents", bus_arn, "Allow")] or "ManagedPolicyArns" in props:
            problems.append(f"infra/member.yaml: ForwardRole may only events:PutEvents on the hub bus ({bus_arn}), found {granted}")
        # The forwarding rule: the hub's pattern, to the hub bus, with that role, briefly retried.
        props = res["ForwardRule"].get("Properties", {})
        if props.get("Name") != {"Fn::Sub": "${MemberRoleName}-forward"}:
            problems.append("infra/member.yaml: ForwardRule: Name must be ${MemberRoleName}-forward (protect-spokes-scp.json keeps rule/ec2pass-member-forward)")
        if props.get("EventBusName", "default") != "default" or props.get("State", "ENABLED") != "ENABLED":
            problems.append("infra/member.yaml: ForwardRule: an ENABLED rule on the default bus, where EC2 sends its state changes")
        problems += pattern_problems("infra/member.yaml: ForwardRule", props.get("EventPattern", {}))
        local = template.get("Resources", {}).get("GuardFunctionStateChange", {}).get("Properties", {}).get("EventPattern")
        if props.get("EventPattern") != local:
            problems.append("infra/member.yaml: ForwardRule: its pattern must be the hub's GuardFunctionStateChange pattern, exactly")
        elsewhere = Resolver(member, SPOKE_PARAMS, where=pseudo(MEMBER_ACCOUNT, MEMBER_REGION))
        targets = here.value(props.get("Targets", []))
        if [t.get("Arn") for t in targets] != [bus_arn] or [t.get("Arn") for t in elsewhere.value(props.get("Targets", []))] != [bus_arn]:
            problems.append(f"infra/member.yaml: ForwardRule: its one target must be the hub's event bus ({bus_arn}: HubRegion, HubAccountId, HubEventBusName), found {[t.get('Arn') for t in targets]}")
        for t in targets:
            if t.get("RoleArn") != here.getatt("ForwardRole", "Arn"):
                problems.append("infra/member.yaml: ForwardRule: its target needs RoleArn the ForwardRole (the hub bus admits the Organization, and a rule sending under that grant must name a role)")
            if int(t.get("RetryPolicy", {}).get("MaximumEventAgeInSeconds", 86400)) > HOP_AGE:
                problems.append(f"infra/member.yaml: ForwardRule: the target needs a RetryPolicy with MaximumEventAgeInSeconds at most {HOP_AGE} (with the hub's hop, the 600 s a local state change takes at most)")
        # The calls' forwarding rule (attribution): the hub's call pattern, to the hub bus, with the same role.
        calls = res["ForwardCallsRule"]
        if calls.get("Properties", {}).get("Name") != {"Fn::Sub": "${MemberRoleName}-forward-calls"}:
            problems.append("infra/member.yaml: ForwardCallsRule: Name must be ${MemberRoleName}-forward-calls (protect-spokes-scp.json keeps rule/ec2pass-member-forward-calls)")
        problems += [f"infra/member.yaml: {p}" for p in call_rule_problems("ForwardCallsRule", calls, "default", bus_arn, None, 3600)
                     if "its one target" not in p]
        local = template.get("Resources", {}).get("CallRule", {}).get("Properties", {}).get("EventPattern")
        if calls.get("Properties", {}).get("EventPattern") != local:
            problems.append("infra/member.yaml: ForwardCallsRule: its pattern must be the hub's CallRule pattern, exactly")
        for where in (here, elsewhere):
            targets = where.value(calls.get("Properties", {}).get("Targets", []))
            if [t.get("Arn") for t in targets] != [bus_arn] or [t.get("RoleArn") for t in targets] != [where.getatt("ForwardRole", "Arn")]:
                problems.append(f"infra/member.yaml: ForwardCallsRule: its one target must be the hub's event bus ({bus_arn}) with RoleArn the ForwardRole, found {json.dumps(targets)}")
    except Exception as e:  # a broken copy can break the checks' own assumptions
        problems.append(f"infra/member.yaml: cannot be read: {e!r}")
    return problems


def org_invariants(org, member):
    """The StackSet: service-managed, deploying itself to every account that joins the OUs, in
    every guarded region, with every parameter of the spoke passed down as the spoke declares it."""
    problems = []
    if not org:
        return ["infra/organization.yaml: missing or empty"]
    where = "infra/organization.yaml"
    if "Transform" in org:
        problems.append(f"{where}: must not use a Transform")
    res = org.get("Resources", {})
    params = org.get("Parameters", {})
    sets = [(n, r) for n, r in res.items() if r.get("Type") == "AWS::CloudFormation::StackSet"]
    if len(sets) != 1:
        return problems + [f"{where}: expected one AWS::CloudFormation::StackSet, found {len(sets)}"]
    name, stack_set = sets[0]
    props = stack_set.get("Properties", {})
    if props.get("PermissionModel") != "SERVICE_MANAGED":
        problems.append(f"{where}: {name}: PermissionModel must be SERVICE_MANAGED (AWS makes the execution role in each account and deploys to accounts as they join; SELF_MANAGED needs a role made by hand in every account and never follows an OU)")
    auto = props.get("AutoDeployment", {})
    if str(auto.get("Enabled")).lower() != "true":
        problems.append(f"{where}: {name}: AutoDeployment Enabled must be true: an account that joins a guarded OU gets its spoke with nobody acting")
    if str(auto.get("RetainStacksOnAccountRemoval")).lower() != "false":
        problems.append(f"{where}: {name}: AutoDeployment RetainStacksOnAccountRemoval must be false: an account that leaves the OUs keeps no role the hub's guard could still use")
    if "CAPABILITY_NAMED_IAM" not in listed(props.get("Capabilities")):
        problems.append(f"{where}: {name}: Capabilities must include CAPABILITY_NAMED_IAM (the spoke's roles have fixed names)")
    if props.get("TemplateURL") != {"Ref": "MemberTemplateUrl"} or "TemplateBody" in props:
        problems.append(f"{where}: {name}: TemplateURL must be !Ref MemberTemplateUrl (infra/member.yaml as uploaded)")
    r = Resolver(org, ORG_PARAMS)
    if not str(r.value(props.get("StackSetName", ""))).startswith("ec2pass-"):
        problems.append(f"{where}: {name}: StackSetName must start with ec2pass- (protect-spokes-scp.json keeps stack/StackSet-ec2pass-*)")
    if props.get("CallAs") != {"Ref": "CallAs"} or params.get("CallAs", {}).get("AllowedValues") != ["SELF", "DELEGATED_ADMIN"] \
            or params.get("CallAs", {}).get("Default") != "SELF":
        problems.append(f"{where}: {name}: CallAs must be !Ref CallAs, SELF by default or DELEGATED_ADMIN")
    op = props.get("OperationPreferences", {})
    if op.get("RegionConcurrencyType") != "PARALLEL":
        problems.append(f"{where}: {name}: OperationPreferences RegionConcurrencyType must be PARALLEL (every guarded region at once)")
    ftp, mcp = op.get("FailureTolerancePercentage"), op.get("MaxConcurrentPercentage")
    if not (isinstance(ftp, int) and isinstance(mcp, int) and 0 <= ftp <= 20 and ftp < mcp <= 100) \
            or "FailureToleranceCount" in op or "MaxConcurrentCount" in op:
        problems.append(f"{where}: {name}: OperationPreferences needs FailureTolerancePercentage at most 20 and below MaxConcurrentPercentage (an operation that fails everywhere stops after its first batch), found {op}")
    groups = props.get("StackInstancesGroup", [])
    if len(groups) != 1 or groups[0].get("DeploymentTargets") != {"OrganizationalUnitIds": {"Ref": "OrganizationalUnitIds"}} \
            or groups[0].get("Regions") != {"Ref": "GuardedRegions"}:
        problems.append(f"{where}: {name}: one StackInstancesGroup - DeploymentTargets OrganizationalUnitIds !Ref OrganizationalUnitIds (automatic deployment follows OUs, not lists of accounts), Regions !Ref GuardedRegions")
    for p in ("OrganizationalUnitIds", "GuardedRegions"):
        if params.get(p, {}).get("Type") != "CommaDelimitedList":
            problems.append(f"{where}: parameter {p} must be a CommaDelimitedList")
    if "TheHubRegionIsGuarded" not in org.get("Rules", {}):
        problems.append(f"{where}: Rules: TheHubRegionIsGuarded is missing (the roles are made in the hub's region only, so it must be one of the StackSet's regions)")
    passed = {x.get("ParameterKey"): x.get("ParameterValue") for x in props.get("Parameters", [])}
    spoke = (member or {}).get("Parameters", {})
    if set(passed) != set(spoke):
        problems.append(f"{where}: {name}: must pass every parameter of infra/member.yaml down, and only those: missing {sorted(set(spoke) - set(passed))}, unknown {sorted(set(passed) - set(spoke))}")
    for key, value in sorted(passed.items()):
        if value != {"Ref": key}:
            problems.append(f"{where}: {name}: the spoke's parameter {key} must be !Ref {key}")
        for attr in ("Default", "AllowedValues", "AllowedPattern"):
            if params.get(key, {}).get(attr) != spoke.get(key, {}).get(attr):
                problems.append(f"{where}: parameter {key} must be declared as infra/member.yaml declares it ({attr})")
    problems += delegation_invariants(org)
    return problems


def delegation_resolvers(org):
    """(what, resolver, must the delegation policy exist?) for infra/organization.yaml: only in the
    management account (CallAs SELF) for a hub in another account, and not when the operator
    merges it by hand."""
    management = pseudo(MANAGEMENT_ACCOUNT, REGION)
    return [
        ("in the management account, for a hub in another account", Resolver(org, ORG_PARAMS, where=management), True),
        ("when the hub is the management account (it needs no delegation)",
         Resolver(org, {**ORG_PARAMS, "HubAccountId": MANAGEMENT_ACCOUNT}, where=management), False),
        ("with CallAs DELEGATED_ADMIN in the hub account (only the management account can make it)",
         Resolver(org, {**ORG_PARAMS, "CallAs": "DELEGATED_ADMIN"}, where=pseudo(ACCOUNT, REGION)), False),
        ("with CallAs DELEGATED_ADMIN in another account (only the management account can make it)",
         Resolver(org, {**ORG_PARAMS, "CallAs": "DELEGATED_ADMIN"}, where=pseudo(OUTSIDER, REGION)), False),
        ("with DelegationPolicy by-hand (the Organization's one resource policy is merged by hand)",
         Resolver(org, {**ORG_PARAMS, "DelegationPolicy": "by-hand"}, where=management), False),
    ]


def delegation_statements(r, org):
    """The resolved statements of every AWS::Organizations::ResourcePolicy of org that exists for r."""
    out = []
    for x in org.get("Resources", {}).values():
        if x.get("Type") != "AWS::Organizations::ResourcePolicy":
            continue
        if "Condition" in x and not r.condition(x["Condition"]):
            continue
        content = x.get("Properties", {}).get("Content", {})
        # A string (which the invariants refuse) is read as the object it spells.
        content = r.value(json.loads(content) if isinstance(content, str) else content)
        sts = content.get("Statement", [])
        out += [sts] if isinstance(sts, dict) else list(sts)
    return out


def delegation_invariants(org):
    """The Organization's delegation policy: one, a JSON object, letting exactly the hub account's
    root make exactly the two read-only calls of ORG_READS on "*", made only where it can and must be."""
    where = "infra/organization.yaml"
    problems = []
    res = org.get("Resources", {})
    policies = {n: x for n, x in res.items() if x.get("Type") == "AWS::Organizations::ResourcePolicy"}
    if len(policies) != 1:
        return [f"{where}: expected one AWS::Organizations::ResourcePolicy (the delegation that lets a hub outside the management account read its OrganizationUnits), found {len(policies)}"]
    (name, policy), = policies.items()
    if params := org.get("Parameters", {}).get("DelegationPolicy"):
        if params.get("Default") != "this-stack" or params.get("AllowedValues") != ["this-stack", "by-hand"]:
            problems.append(f"{where}: parameter DelegationPolicy must be this-stack (the default) or by-hand")
    else:
        problems.append(f"{where}: missing parameter DelegationPolicy (an Organization has one resource policy: one that exists must be merged by hand)")
    if not isinstance(policy.get("Properties", {}).get("Content"), dict):
        problems.append(f"{where}: {name}: Content must be a JSON object, not a string (CloudFormation detects no drift on a string)")
    hub_root = f"arn:aws:iam::{ACCOUNT}:root"
    for what, r, wanted in delegation_resolvers(org):
        try:
            exists = "Condition" not in policy or r.condition(policy["Condition"])
            sts = delegation_statements(r, org)
        except Exception as e:  # a broken copy can break the checks' own assumptions
            problems.append(f"{where}: {name}: cannot be resolved {what}: {e!r}")
            continue
        if exists != wanted:
            problems.append(f"{where}: {name}: must {'exist' if wanted else 'not exist'} {what} (a Condition comparing HubAccountId with AWS::AccountId, CallAs SELF, DelegationPolicy this-stack)")
        if not exists:
            continue
        granted = set()
        for st in sts:
            acts = actions(st)
            granted |= set(acts)
            if st.get("Effect") != "Allow" or {"NotPrincipal", "NotAction", "NotResource"} & set(st):
                problems.append(f"{where}: {name}: the statement {st.get('Sid')} must be an Allow with Principal, Action and Resource (no Not...), found {json.dumps(st)}")
            if st.get("Principal") != {"AWS": hub_root} and st.get("Principal") != {"AWS": [hub_root]}:
                problems.append(f"{where}: {name}: the statement {st.get('Sid')} must name exactly the hub account ({hub_root}: HubAccountId), never * or another account, found {json.dumps(st.get('Principal'))}")
            for a in acts:
                if not re.fullmatch(r"organizations:(List|Describe)[A-Za-z]+", a):
                    problems.append(f"{where}: {name}: may delegate only read-only organizations:List... / Describe... actions, without wildcards, found {a}")
            if listed(st.get("Resource")) != ["*"]:
                problems.append(f"{where}: {name}: the statement {st.get('Sid')} must be on Resource \"*\", found {st.get('Resource')!r}")
        if granted != set(ORG_READS):
            problems.append(f"{where}: {name}: must delegate exactly {ORG_READS} (the calls the hub makes, nothing more), found {sorted(granted)}")
    return problems


# ---------------------------------------------------------------------------------------------
# The example policies.
# ---------------------------------------------------------------------------------------------

ADMIN_SCP = "arn:aws:iam::*:role/ec2pass-admin"
ISSUER_SCP, GUARD_SCP = "arn:aws:iam::*:role/ec2pass-issuer", "arn:aws:iam::*:role/ec2pass-guard"
FOLLOWUP_SCP = "arn:aws:iam::*:role/ec2pass-followup"
ATTRIBUTION_SCP = "arn:aws:iam::*:role/ec2pass-attribution"
CARVE_OUTS = {ADMIN_SCP, ISSUER_SCP, GUARD_SCP}
# The follow-up role is excepted only here, each statement denying exactly these actions: it
# updates the table's items (its own policy keeps it to reply# items: FOLLOWUP_GRANTS) and reads
# the bot token and the reply key, nothing else of the table and no other secret.
FOLLOWUP_CARVE_OUTS = {
    "OnlyTheRolesUpdateItems": ["dynamodb:UpdateItem"],
    "OnlyTheFollowupAndTheAdminRead": ["secretsmanager:GetSecretValue"],
    "OnlyTheFollowupAndTheAdminDecrypt": ["kms:CreateGrant", "kms:Decrypt", "kms:ReEncryptFrom"],
    "OnlyTheIssuerTheFollowupAndTheAdminRead": ["secretsmanager:GetSecretValue"],
    "OnlyTheIssuerTheFollowupAndTheAdminDecrypt": ["kms:CreateGrant", "kms:Decrypt", "kms:ReEncryptFrom"],
}
# The attribution role likewise (issue 14), each statement denying exactly these actions: it puts
# and deletes items and updates them (its own policy keeps it to call#, response# and verdict#
# items: ATTRIBUTION_GRANTS), and takes the calls of its queue; never DeleteTable, UpdateTable,
# BatchWriteItem or PartiQL (KeepTheTable).
ATTRIBUTION_CARVE_OUTS = {
    "OnlyTheRolesPutAndDeleteItems": ["dynamodb:DeleteItem", "dynamodb:PutItem"],
    "OnlyTheRolesUpdateItems": ["dynamodb:UpdateItem"],
    "OnlyTheAttributionTakesCalls": ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:ReceiveMessage", "sqs:SendMessage"],
}
# Statements whose carve-outs are exactly these (the table's and the secrets').
EXACT_CARVE_OUTS = {
    "KeepTheTable": {ISSUER_SCP, GUARD_SCP, ADMIN_SCP},
    "OnlyTheRolesPutAndDeleteItems": {ISSUER_SCP, GUARD_SCP, ATTRIBUTION_SCP, ADMIN_SCP},
    "OnlyTheRolesUpdateItems": {ISSUER_SCP, GUARD_SCP, FOLLOWUP_SCP, ATTRIBUTION_SCP, ADMIN_SCP},
    "OnlyTheAttributionTakesCalls": {ATTRIBUTION_SCP, ADMIN_SCP},
    "OnlyTheIssuerAndTheAdminRead": {ISSUER_SCP, ADMIN_SCP},
    "OnlyTheIssuerAndTheAdminDecrypt": {ISSUER_SCP, ADMIN_SCP},
    "OnlyTheFollowupAndTheAdminRead": {FOLLOWUP_SCP, ADMIN_SCP},
    "OnlyTheFollowupAndTheAdminDecrypt": {FOLLOWUP_SCP, ADMIN_SCP},
    # The reply key: both roles that need it, and the admin.
    "OnlyTheIssuerTheFollowupAndTheAdminRead": {ISSUER_SCP, FOLLOWUP_SCP, ADMIN_SCP},
    "OnlyTheIssuerTheFollowupAndTheAdminDecrypt": {ISSUER_SCP, FOLLOWUP_SCP, ADMIN_SCP},
}
MEMBER_SCP = "arn:aws:iam::*:role/ec2pass-member"
# StackSets' execution role in each member account ("Configure a custom execution role template
# for StackSets", AWS CloudFormation User Guide: stacksets-exec-*), and the spokes' forwarding
# roles. Both are wildcards, so the same file must keep anyone else from making a role so named
# (claims "org: ... cannot create a role named like ...").
STACKSETS_EXEC = "arn:aws:iam::*:role/stacksets-exec-*"
FORWARD_ROLES = "arn:aws:iam::*:role/ec2pass-member-forward-*"
# The four files a single account carries (docs/policies.md, "The policy files").
SINGLE_ACCOUNT_POLICIES = ("protect-auth-tag.json", "protect-guard-scp.json", "protect-secret-and-exemptions-scp.json",
                           "deny-unguarded-regions-scp.json")
FILE_CARVE_OUTS = {"protect-auth-tag.json": {MEMBER_SCP}, "protect-spokes-scp.json": {STACKSETS_EXEC, FORWARD_ROLES}}
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
                   "deny-unguarded-regions-scp.json", "protect-spokes-scp.json", "protect-hub-scp.json"):
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
            allowed = CARVE_OUTS | FILE_CARVE_OUTS.get(name, set()) | ({FOLLOWUP_SCP} if sid in FOLLOWUP_CARVE_OUTS else set()) \
                | ({ATTRIBUTION_SCP} if sid in ATTRIBUTION_CARVE_OUTS else set())
            for v in exempt:
                if v not in allowed:
                    problems.append(f"{name} {sid}: the carve-out {v} is not one of the exact ec2pass roles {sorted(allowed)} (a path or a wildcard can be borrowed)")
            if sid in EXACT_CARVE_OUTS and set(exempt) != EXACT_CARVE_OUTS[sid]:
                problems.append(f"{name} {sid}: must except exactly {sorted(EXACT_CARVE_OUTS[sid])}, found {sorted(exempt)}")
            if FOLLOWUP_SCP in exempt and (sorted(actions(st)) != FOLLOWUP_CARVE_OUTS.get(sid) or "NotAction" in st):
                problems.append(f"{name} {sid}: the follow-up role's carve-out must deny exactly {FOLLOWUP_CARVE_OUTS.get(sid)} (it may update items and read the bot token and the reply key, nothing more), found {actions(st)}")
            if ATTRIBUTION_SCP in exempt and (sorted(actions(st)) != ATTRIBUTION_CARVE_OUTS.get(sid) or "NotAction" in st):
                problems.append(f"{name} {sid}: the attribution role's carve-out must deny exactly {ATTRIBUTION_CARVE_OUTS.get(sid)} (it may put, delete and update items and take its calls, nothing more of the table or the queues), found {actions(st)}")
            if ADMIN_SCP not in exempt:
                problems.append(f"{name} {sid}: must except the admin {ADMIN_SCP}")
            if "lambda:InvokeFunctionUrl" in actions(st):
                problems.append(f"{name} {sid}: must not deny lambda:InvokeFunctionUrl (Slack calls the issuer's URL)")
    present = {st.get("Sid") for doc in policies.values() for st in doc.get("Statement", [])}
    for sid in sorted(set(EXACT_CARVE_OUTS) - present):
        problems.append(f"infra/policies: the statement {sid} is missing (the table's and the secrets' carve-outs, docs/policies.md)")
    # The table's and the secrets' statements protect a single account's stack too: in a file it carries.
    for name, doc in policies.items():
        for st in doc.get("Statement", []):
            if st.get("Sid") in EXACT_CARVE_OUTS and name not in SINGLE_ACCOUNT_POLICIES:
                problems.append(f"{name} {st.get('Sid')}: must be in one of {list(SINGLE_ACCOUNT_POLICIES)}, the files a single account carries")
    tag_policy = policies.get("protect-auth-tag.json", {})
    if not any(st.get("Action") == "ec2:DeleteTags" and st.get("Condition", {}).get("Null", {}).get("aws:TagKeys") == "true"
               for st in tag_policy.get("Statement", [])):
        problems.append("protect-auth-tag: DeleteTags without tags (which deletes every tag, Auth included) is not denied")
    for st in tag_policy.get("Statement", []):
        exempt = set(listed(st.get("Condition", {}).get("ArnNotLike", {}).get("aws:PrincipalArn")))
        if exempt != {"arn:aws:iam::*:role/ec2pass-guard", MEMBER_SCP, ADMIN_SCP}:
            problems.append(f"protect-auth-tag {st.get('Sid')}: must except exactly the guard's role, the member role it acts through in the member accounts, and the admin, found {sorted(exempt)}")
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


_IAM_DEFINITIONS = {}


def iam_definitions():
    """parliament's IAM definitions by service prefix, read once (a few MB of JSON)."""
    if not _IAM_DEFINITIONS:
        import parliament

        path = Path(parliament.__file__).parent / "iam_definition.json"
        _IAM_DEFINITIONS.update({s["prefix"]: s for s in json.loads(path.read_text())})
    return _IAM_DEFINITIONS


def parliament_findings(policies, stack_policies):
    """parliament, on the example policies and on the stack's resolved policies (the roles', the
    keys', the secret's): unknown actions,
    condition keys AWS never sets for an action (a Deny on such a key never matches), malformed
    statements. parliament checks a condition key against the action's own keys only, so a key
    of the action's resource type (kms:ResourceAliases on key) is looked up in its definitions."""
    import parliament

    definitions = iam_definitions()

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
        try:
            found = parliament.analyze_policy_string(json.dumps(doc)).findings
        except Exception as e:  # parliament trips over some malformed documents rather than report them
            problems.append(f"parliament: {name}: cannot be analyzed ({e!r}): malformed")
            continue
        for f in found:
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

    def __init__(self, template, policies, parameters=None):
        from principalmapper.common import Node, Policy

        r = Resolver(template, parameters)
        res = template.get("Resources", {})
        self.r = r
        self.admin = r.admin_arn() if "SigningSecretKey" in res else f"arn:aws:iam::{ACCOUNT}:role/ec2pass-admin"
        self.issuer_role = r.getatt("IssuerRole", "Arn")
        self.guard_role = r.getatt("GuardRole", "Arn")
        self.followup_role = r.getatt("FollowupRole", "Arn")
        self.attribution_role = r.getatt("AttributionRole", "Arn")
        self.secret = r.ref("SigningSecret")
        self.signing_key = r.getatt("SigningSecretKey", "Arn")
        self.reply_key = r.ref("ReplyKey")
        self.reply_key_key = r.getatt("ReplyKeyKey", "Arn")
        self.alert_key = r.getatt("AlertKey", "Arn")
        self.topic = r.ref("AlertTopic")
        self.subscription = f"{self.topic}:5a1b2c3d-0000-4000-8000-0123456789ab"
        self.queue = r.getatt("GuardFailures", "Arn")
        self.state_queue = r.getatt("StateChangeQueue", "Arn")
        self.followup_queue = r.getatt("FollowupQueue", "Arn")
        self.followup_failures = r.getatt("FollowupFailures", "Arn")
        self.call_queue = r.getatt("CallQueue", "Arn")
        self.call_failures = r.getatt("CallFailures", "Arn")
        self.mapping = f"arn:aws:lambda:{REGION}:{ACCOUNT}:event-source-mapping:0f0e0d0c-0000-4000-8000-00000000e5a1"
        self.table = r.getatt("Table", "Arn")
        self.guard_fn = r.getatt("GuardFunction", "Arn")
        self.issuer_fn = r.getatt("IssuerFunction", "Arn")
        self.followup_fn = r.getatt("FollowupFunction", "Arn")
        self.attribution_fn = r.getatt("AttributionFunction", "Arn")
        # The chat options' resources (World(template, policies, CHAT_PARAMS)).
        self.mattermost_token = r.ref("MattermostToken")
        self.bot_token = r.ref("SlackBotToken")
        self.bot_key = r.getatt("SlackBotTokenKey", "Arn")
        self.channel_topic = r.ref("ChannelTopic")
        self.channel_role = r.getatt("ChannelRole", "Arn")
        self.rule = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{r.name('GuardFunctionStateChange')}"
        self.alarms = [f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{r.name(n)}"
                       for n, x in res.items() if x.get("Type") == "AWS::CloudWatch::Alarm"]
        self.instance = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0123456789abcdef0"
        self.group = f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:0f0e0d0c-0000-4000-8000-000000000001:autoScalingGroupName/"
        self.launch_template = f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/lt-0123456789abcdef0"
        # Only what exists with these parameters: aliases, key policies, the secrets', queues' and
        # topics' resource policies.
        self.aliases = {}
        for n, x in res.items():
            if x.get("Type") == "AWS::KMS::Alias" and r.exists(n):
                target = x["Properties"]["TargetKeyId"]
                logical = target.get("Ref") if isinstance(target, dict) else None
                if logical:
                    self.aliases[r.getatt(logical, "Arn")] = r.value(x["Properties"]["AliasName"])
        self.resource_policies = {}
        for n, x in res.items():
            if not r.exists(n):
                continue
            props = x.get("Properties", {})
            if x.get("Type") == "AWS::KMS::Key" and "KeyPolicy" in props:
                self.resource_policies[r.getatt(n, "Arn")] = r.value(props["KeyPolicy"])
            if x.get("Type") == "AWS::SecretsManager::ResourcePolicy":
                self.resource_policies[r.value(props["SecretId"])] = r.value(props["ResourcePolicy"])
            if x.get("Type") == "AWS::SQS::QueuePolicy":
                for queue in props.get("Queues", []):
                    if isinstance(queue, dict) and "Ref" in queue:
                        self.resource_policies[r.getatt(queue["Ref"], "Arn")] = r.value(props["PolicyDocument"])
            if x.get("Type") == "AWS::SNS::TopicPolicy":
                for topic in r.value(props.get("Topics", [])):
                    self.resource_policies[topic] = r.value(props["PolicyDocument"])
            if x.get("Type") == "AWS::S3::BucketPolicy":
                self.resource_policies[f"arn:aws:s3:::{r.value(props['Bucket'])}"] = r.value(props["PolicyDocument"])
        self.identity = {}
        for who, role in (("issuer", role_of(res.get("IssuerFunction", {}))), ("guard", role_of(res.get("GuardFunction", {}))),
                          ("followup", role_of(res.get("FollowupFunction", {}))), ("channel", "ChannelRole"),
                          ("attribution", role_of(res.get("AttributionFunction", {})))):
            self.identity[who] = resolved_policies(r, template, role) if role and r.exists(role) else []
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
            "the follow-up role": node(self.followup_role, self.identity["followup"], {"ec2pass:role": "followup"}),
            "the chat channel's role": node(self.channel_role, self.identity["channel"], {"ec2pass:role": "channel"}),
            "the attribution role": node(self.attribution_role, self.identity["attribution"], {"ec2pass:role": "attribution"}),
            # Each role as if someone had widened its own policy to AdministratorAccess: what the
            # SCPs and the resource policies still refuse it.
            "the issuer's role, widened": node(self.issuer_role, [ADMINISTRATOR_ACCESS], {"ec2pass:role": "issuer"}),
            "the follow-up role, widened": node(self.followup_role, [ADMINISTRATOR_ACCESS], {"ec2pass:role": "followup"}),
            "the attribution role, widened": node(self.attribution_role, [ADMINISTRATOR_ACCESS], {"ec2pass:role": "attribution"}),
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
    A, ISS, GRD, FUP = "the admin", "the issuer's role", "the guard's role", "the follow-up role"
    ADM, RO, DEV, PATH = "an AdministratorAccess role", "a ReadOnlyAccess holder", "a developer", "a role under /ec2pass/"
    ISSW, FUPW = "the issuer's role, widened", "the follow-up role, widened"
    exempt = {"aws:TagKeys": ["Name", "ec2pass:exempt"]}
    via_sm = {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"}
    changes = ["secretsmanager:PutResourcePolicy", "secretsmanager:DeleteResourcePolicy", "secretsmanager:PutSecretValue",
               "secretsmanager:UpdateSecret", "secretsmanager:DeleteSecret", "secretsmanager:RotateSecret"]
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
        # 1b. The reply key (the reply URLs are stored sealed with it): the issuer's and the
        # follow-up role's, in every stack.
        ("reply key: a ReadOnlyAccess holder, a developer, an AdministratorAccess role, the guard's role and a role under /ec2pass/ cannot read it",
         [RO, DEV, ADM, GRD, PATH], ["secretsmanager:GetSecretValue"], [w.reply_key], {}, "all", False),
        ("reply key: its resource policy alone keeps an AdministratorAccess role and a ReadOnlyAccess holder out", [ADM, RO],
         ["secretsmanager:GetSecretValue"], [w.reply_key], {}, "resource", False),
        ("reply key: the SCP alone keeps an AdministratorAccess role, a developer and a ReadOnlyAccess holder out", [ADM, DEV, RO],
         ["secretsmanager:GetSecretValue"], [w.reply_key], {}, "scp", False),
        ("reply key: the issuer's role and the follow-up role read it", [ISS, FUP], ["secretsmanager:GetSecretValue"], [w.reply_key], {}, "all", True),
        ("reply key: the admin reads it, and could replace it", A, ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"], [w.reply_key], {}, "all", True),
        ("reply key: nobody else changes, rotates or deletes it or its policy, even without the SCP", ADM, changes, [w.reply_key], {}, "resource", False),
        ("reply key: not even its readers, widened, change, rotate or delete it", [ISSW, FUPW], changes, [w.reply_key], {}, "all", False),
        ("reply key: the SCP alone keeps a developer from changing, rotating or deleting it", DEV, changes, [w.reply_key], {}, "scp", False),
        ("reply key's key: the issuer's role and the follow-up role decrypt through Secrets Manager", [ISS, FUP], ["kms:Decrypt"],
         [w.reply_key_key], via_sm, "all", True),
        ("reply key's key: neither decrypts directly", [ISS, FUP], ["kms:Decrypt"], [w.reply_key_key], {}, "all", False),
        ("reply key's key: the guard's role cannot decrypt with it, through Secrets Manager or not", GRD, ["kms:Decrypt", "kms:CreateGrant"],
         [w.reply_key_key], via_sm, "all", False),
        ("reply key's key: its key policy lets no AdministratorAccess role decrypt", ADM, ["kms:Decrypt", "kms:CreateGrant", "kms:ReEncryptFrom"],
         [w.reply_key_key], via_sm, "resource", False),
        ("reply key's key: the SCP alone keeps an AdministratorAccess role from decrypting", ADM, ["kms:Decrypt", "kms:CreateGrant"],
         [w.reply_key_key], {}, "scp", False),
        ("reply key's key: only the admin rewrites, disables or deletes it", ADM, ["kms:PutKeyPolicy", "kms:ScheduleKeyDeletion", "kms:DisableKey"],
         [w.reply_key_key], {}, "all", False),
        ("reply key's key: the admin manages it", A, ["kms:PutKeyPolicy", "kms:Decrypt"], [w.reply_key_key], {}, "all", True),
        ("reply key: sharing it gives the follow-up role nothing of the signing secret or its key", FUP,
         ["secretsmanager:GetSecretValue", "kms:Decrypt"], [w.secret, w.signing_key], via_sm, "all", False),
        # Why the URLs are sealed: the table's reply items stay readable to ReadOnlyAccess.
        ("reply key (residual, why reply URLs are sealed): a ReadOnlyAccess holder still reads and scans reply items", RO,
         ["dynamodb:GetItem", "dynamodb:Scan"], [w.table], {"dynamodb:LeadingKeys": ["reply#0123"]}, "all", True),
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
        ("roles: a developer cannot re-trust or widen the issuer's or the guard's role", DEV,
         ["iam:UpdateAssumeRolePolicy", "iam:PutRolePolicy", "iam:AttachRolePolicy"], [w.issuer_role, w.guard_role], {}, "all", False),
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
        ("table: the issuer's role queries the by-instance index (`status`)", ISS, ["dynamodb:Query"], [f"{w.table}/index/by-instance"], {}, "all", True),
        ("table: the issuer's role queries no other index, nor the table, and scans nothing", ISS, ["dynamodb:Query", "dynamodb:Scan"],
         [w.table, f"{w.table}/index/by-owner", f"{w.table}/index/alerts-due", f"{w.table}/index/replies-due"], {}, "all", False),
        ("table: the issuer's role scans not even the by-instance index", ISS, ["dynamodb:Scan"], [f"{w.table}/index/by-instance"], {}, "all", False),
        ("table: the guard's role queries no other index", GRD, ["dynamodb:Query"],
         [f"{w.table}/index/by-owner", f"{w.table}/index/replies-due", f"{w.table}/index/by-instance"], {}, "all", False),
        ("table: the issuer's role puts a password's reply item", ISS, ["dynamodb:PutItem"], [w.table], {"dynamodb:LeadingKeys": ["reply#0123"]}, "all", True),
        ("table: the issuer's role never reads, changes or deletes a reply item (its reply URL is the follow-up's)", ISS,
         ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"], [w.table], {"dynamodb:LeadingKeys": ["reply#0123"]}, "all", False),
        ("table: the guard's role queries the alerts-due index", GRD,
         ["dynamodb:Query"], [f"{w.table}/index/alerts-due"], {}, "all", True),
        ("table: the guard's role describes the table and withdraws a verdict", GRD, ["dynamodb:DescribeTable", "dynamodb:DeleteItem"], [w.table],
         {"dynamodb:LeadingKeys": ["verdict#i-0123456789abcdef0@1700000000"]}, "all", True),
        ("table: the guard's role deletes no password", GRD, ["dynamodb:DeleteItem"], [w.table], {"dynamodb:LeadingKeys": ["pw#0123"]}, "all", False),
        # 15. The follow-ups (issue 13).
        *[(f"followup: the follow-up role reads {p} items", FUP, ["dynamodb:GetItem"], [w.table], {"dynamodb:LeadingKeys": [p + "0123"]}, "all", True)
          for p in ("reply#", "pw#")],
        # Its own policy, and the SCP's carve-out for it (OnlyTheRolesUpdateItems).
        ("followup: the follow-up role takes and settles a reply's posts, the SCP included", FUP, ["dynamodb:UpdateItem"], [w.table],
         {"dynamodb:LeadingKeys": ["reply#0123"]}, "all", True),
        ("followup: the SCP alone lets even a widened follow-up role only update the table's items: no put, delete, batch or PartiQL write, and no change to the table", FUPW,
         ["dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem", "dynamodb:PartiQLInsert", "dynamodb:PartiQLUpdate",
          "dynamodb:PartiQLDelete", "dynamodb:DeleteTable", "dynamodb:UpdateTable", "dynamodb:PutResourcePolicy"], [w.table],
         {"dynamodb:LeadingKeys": ["reply#0123"]}, "scp", False),
        ("followup (control): the SCP's carve-out lets a widened follow-up role update items (its own policy keeps it to reply# items)", FUPW,
         ["dynamodb:UpdateItem"], [w.table], {"dynamodb:LeadingKeys": ["reply#0123"]}, "scp", True),
        ("table: a developer cannot update an item, not even a reply's", DEV, ["dynamodb:UpdateItem"], [w.table], {"dynamodb:LeadingKeys": ["reply#0123"]}, "all", False),
        *[(f"followup: the follow-up role changes no {what}, and puts or deletes nothing", FUP,
           ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"], [w.table], {"dynamodb:LeadingKeys": [key]}, "all", False)
          for what, key in (("password", "pw#0123"), ("verdict", "verdict#i-0123456789abcdef0@1700000000"), ("ledger", "owner#T1#U1"))],
        ("followup: the follow-up role puts or deletes no reply item", FUP, ["dynamodb:PutItem", "dynamodb:DeleteItem"], [w.table],
         {"dynamodb:LeadingKeys": ["reply#0123"]}, "all", False),
        ("followup: the follow-up role reads no verdict, ledger or meta item, and never in a batch", FUP, ["dynamodb:GetItem", "dynamodb:BatchGetItem"], [w.table],
         {"dynamodb:LeadingKeys": ["verdict#i-0123456789abcdef0@1700000000", "owner#T1#U1", "meta#activation"]}, "all", False),
        ("followup: the follow-up role queries the replies-due index", FUP, ["dynamodb:Query"], [f"{w.table}/index/replies-due"], {}, "all", True),
        ("followup: the follow-up role queries and scans nothing else", FUP, ["dynamodb:Query", "dynamodb:Scan"],
         [w.table, f"{w.table}/index/alerts-due", f"{w.table}/index/by-owner", f"{w.table}/index/by-instance"], {}, "all", False),
        ("roles: a developer cannot pass, re-trust or widen the follow-up role", DEV,
         ["iam:PassRole", "iam:UpdateAssumeRolePolicy", "iam:PutRolePolicy", "iam:AttachRolePolicy"], [w.followup_role], {}, "all", False),
        ("followup: the follow-up role cannot touch instances, publish alerts, read the signing secret or use the signing or the alert key", FUP,
         ["ec2:DescribeInstances", "ec2:StopInstances", "ec2:DeleteTags", "sns:Publish", "secretsmanager:GetSecretValue", "kms:Decrypt", "kms:GenerateDataKey"],
         [w.instance, w.topic, w.secret, w.signing_key, w.alert_key, "*"], {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"}, "all", False),
        ("followup: the follow-up role takes the alerts of its queue", FUP, ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
         [w.followup_queue], {}, "all", True),
        ("followup: the follow-up role takes nothing from another queue, and sends to none", FUP, ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage"],
         [w.state_queue, w.queue, w.followup_failures], {}, "all", False),
        ("followup queue: only the alert topic sends: no developer", DEV, ["sqs:SendMessage"], [w.followup_queue], {}, "all", False),
        ("followup queue: its own policy refuses an AdministratorAccess role's alerts, without the SCP", ADM, ["sqs:SendMessage"], [w.followup_queue], {}, "resource", False),
        ("followup queue: its own policy keeps a developer from draining, hiding, purging or re-policing it, without the SCP", DEV,
         ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:PurgeQueue", "sqs:SetQueueAttributes", "sqs:AddPermission"],
         [w.followup_queue], {}, "resource", False),
        ("followup queue: its failure queue's own policy keeps a developer from draining or purging it, without the SCP", DEV,
         ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:PurgeQueue", "sqs:SetQueueAttributes"], [w.followup_failures], {}, "resource", False),
        ("followup queue: the admin re-drives the failure queue into it", A,
         ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:SendMessage"], [w.followup_queue, w.followup_failures], {}, "all", True),
        ("followup: a developer cannot invoke the follow-up function", DEV, ["lambda:InvokeFunction", "lambda:InvokeAsync"], [w.followup_fn], {}, "all", False),
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
    ] + attribution_claims(w)
    return c


def attribution_claims(w):
    """The attribution path's claims (issue 14), with the defaults: Response off."""
    A, GRD, ATT, ATTW = "the admin", "the guard's role", "the attribution role", "the attribution role, widened"
    ADM, DEV = "an AdministratorAccess role", "a developer"
    take = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"]
    someone = [f"arn:aws:iam::{ACCOUNT}:user/developer", f"arn:aws:iam::{ACCOUNT}:role/developer"]
    verdict = {"dynamodb:LeadingKeys": ["verdict#i-0123456789abcdef0@1700000000"]}
    return [
        ("attribution: the attribution role takes, deletes and hands back the calls of its queue", ATT,
         take + ["sqs:GetQueueAttributes"], [w.call_queue], {}, "all", True),
        ("attribution: the attribution role takes nothing from another queue, and sends to none", ATT, ["sqs:ReceiveMessage", "sqs:SendMessage"],
         [w.state_queue, w.queue, w.call_failures], {}, "all", False),
        ("attribution: the attribution role cannot send itself a call", ATT, ["sqs:SendMessage"], [w.call_queue], {}, "all", False),
        ("attribution: the attribution role keeps a call by instance (call#)", ATT, ["dynamodb:PutItem"], [w.table],
         {"dynamodb:LeadingKeys": ["call#i-0123456789abcdef0"]}, "all", True),
        ("attribution: the attribution role records the caller on a verdict", ATT, ["dynamodb:UpdateItem"], [w.table], verdict, "all", True),
        ("attribution: the attribution role claims a response, confirms it or gives it back (response#)", ATT, ["dynamodb:PutItem", "dynamodb:UpdateItem"], [w.table],
         {"dynamodb:LeadingKeys": [f"response#arn:aws:iam::{ACCOUNT}:role/developer"]}, "all", True),
        ("attribution: the attribution role deletes no response claim", ATT, ["dynamodb:DeleteItem"], [w.table],
         {"dynamodb:LeadingKeys": [f"response#arn:aws:iam::{ACCOUNT}:role/developer"]}, "all", False),
        ("attribution: the attribution role puts, deletes or reads no verdict, and reads no item", ATT,
         ["dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:BatchWriteItem"], [w.table], verdict, "all", False),
        ("attribution: the attribution role writes or reads no password", ATT,
         ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:GetItem"], [w.table], {"dynamodb:LeadingKeys": ["pw#0123"]}, "all", False),
        ("attribution: the attribution role queries the by-instance index", ATT, ["dynamodb:Query"], [f"{w.table}/index/by-instance"], {}, "all", True),
        ("attribution: the attribution role queries and scans nothing else", ATT, ["dynamodb:Query", "dynamodb:Scan"],
         [w.table, f"{w.table}/index/alerts-due", f"{w.table}/index/replies-due"], {}, "all", False),
        ("attribution: the attribution role publishes to the alert topic", ATT, ["sns:Publish"], [w.topic], {}, "all", True),
        ("attribution: the attribution role uses the alert key through SNS", ATT, ["kms:GenerateDataKey", "kms:Decrypt"], [w.alert_key],
         {"kms:ViaService": f"sns.{REGION}.amazonaws.com"}, "all", True),
        ("attribution: the attribution role uses the alert key through SNS only", ATT, ["kms:GenerateDataKey", "kms:Decrypt"], [w.alert_key], {}, "all", False),
        ("attribution: the attribution role stops, untags, terminates and starts nothing", ATT,
         ["ec2:StopInstances", "ec2:DeleteTags", "ec2:TerminateInstances", "ec2:StartInstances"], [w.instance], {"aws:TagKeys": ["Auth"]}, "all", False),
        ("attribution: the attribution role reads no secret", ATT, ["secretsmanager:GetSecretValue"], [w.secret, w.reply_key], {}, "all", False),
        ("attribution: with Response off, the attribution role changes no IAM user or role", ATT, RESPONSE_ACTIONS, someone, {}, "all", False),
        ("attribution: the guard's role changes no IAM user or role", GRD, RESPONSE_ACTIONS + ["iam:AttachRolePolicy"], someone, {}, "all", False),
        ("attribution: the SCP alone keeps the attribution role, widened, from deleting, reconfiguring or batch-writing the table", ATTW,
         ["dynamodb:DeleteTable", "dynamodb:UpdateTable", "dynamodb:BatchWriteItem"], [w.table], {}, "scp", False),
        ("roles: a developer cannot pass, re-trust or widen the attribution role", DEV,
         ["iam:PassRole", "iam:UpdateAssumeRolePolicy", "iam:PutRolePolicy", "iam:AttachRolePolicy"], [w.attribution_role], {}, "all", False),
        ("attribution: a developer cannot invoke the attribution function (a forged call)", DEV, ["lambda:InvokeFunction", "lambda:InvokeAsync"],
         [w.attribution_fn], {}, "all", False),
        # The call queue: a forged call could pin a deny on anyone, and with Response=on cut them off.
        ("call queue: only the call rules send: no developer", DEV, ["sqs:SendMessage"], [w.call_queue], {}, "all", False),
        ("call queue: its own policy refuses an AdministratorAccess role's calls and keeps it from taking or hiding them, without the SCP", ADM,
         ["sqs:SendMessage"] + take, [w.call_queue], {}, "resource", False),
        ("call queue: the SCP alone keeps a developer from sending, taking or hiding calls", DEV, ["sqs:SendMessage"] + take, [w.call_queue], {}, "scp", False),
        ("call queue: nobody else takes or hides calls: not a developer, nor the guard's role", [DEV, GRD], take, [w.call_queue], {}, "all", False),
        ("call queue: a developer cannot purge, re-police or delete it, or drain its failure queue", DEV,
         ["sqs:PurgeQueue", "sqs:SetQueueAttributes", "sqs:DeleteQueue", "sqs:ReceiveMessage"], [w.call_queue, w.call_failures], {}, "all", False),
        ("call queue: the admin re-drives the call failure queue into it", A,
         ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:SendMessage"], [w.call_queue, w.call_failures], {}, "all", True),
    ]


def response_claims(w):
    """The response's claims (Response=on), over the world with every option on."""
    GRD, ATT = "the guard's role", "the attribution role"
    iam = f"arn:aws:iam::{ACCOUNT}"
    never = [w.admin, w.guard_role, w.attribution_role, w.issuer_role, f"{iam}:role/ec2pass-member", f"{iam}:role/ec2pass-member-forward-{REGION}",
             f"{iam}:role/ec2pass-lookup", f"{iam}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"]
    return [
        ("response: the attribution role deactivates an access key of a user of this account", ATT, ["iam:UpdateAccessKey"],
         [f"{iam}:user/developer", f"{iam}:user/ci/deployer"], {}, "all", True),
        ("response: the attribution role revokes the sessions of a role of this account", ATT, ["iam:PutRolePolicy"],
         [f"{iam}:role/developer", f"{iam}:role/teams/developer"], {}, "all", True),
        ("response: the attribution role's own Deny keeps both calls off the admin, ec2pass's roles, the member, forwarding and lookup roles and service-linked roles, without the SCP",
         ATT, RESPONSE_ACTIONS, never, {}, "none", False),
        ("response: the attribution role acts in no other account", ATT, RESPONSE_ACTIONS,
         [f"arn:aws:iam::{OUTSIDER}:user/developer", f"arn:aws:iam::{OUTSIDER}:role/developer"], {}, "all", False),
        ("response: nothing else of IAM: the attribution role attaches, deletes or writes no other policy, creates no key or role, changes no trust and passes no role",
         ATT, ["iam:AttachRolePolicy", "iam:DeleteRolePolicy", "iam:PutUserPolicy", "iam:CreateAccessKey", "iam:DeleteAccessKey",
               "iam:UpdateAssumeRolePolicy", "iam:CreateRole", "iam:PassRole"], [f"{iam}:role/developer", f"{iam}:user/developer"], {}, "all", False),
        ("response: the guard's role still changes no IAM user or role", GRD, RESPONSE_ACTIONS, [f"{iam}:user/developer", f"{iam}:role/developer"], {}, "all", False),
    ]


def chat_claims(w):
    """The chat options' claims, over World(template, policies, CHAT_PARAMS): every option on."""
    A, ISS, GRD, FUP = "the admin", "the issuer's role", "the guard's role", "the follow-up role"
    ADM, RO, DEV, PATH = "an AdministratorAccess role", "a ReadOnlyAccess holder", "a developer", "a role under /ec2pass/"
    ISSW, FUPW, CHAN = "the issuer's role, widened", "the follow-up role, widened", "the chat channel's role"
    via_sm = {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"}
    via_sns = {"kms:ViaService": f"sns.{REGION}.amazonaws.com"}
    changes = ["secretsmanager:PutResourcePolicy", "secretsmanager:DeleteResourcePolicy", "secretsmanager:PutSecretValue",
               "secretsmanager:UpdateSecret", "secretsmanager:DeleteSecret"]
    return [
        # The Mattermost token: the signing secret's protection.
        ("mattermost token: a ReadOnlyAccess holder, an AdministratorAccess role, the guard's role, the follow-up role and a role under /ec2pass/ cannot read it",
         [RO, ADM, GRD, FUP, PATH], ["secretsmanager:GetSecretValue"], [w.mattermost_token], {}, "all", False),
        ("mattermost token: its resource policy alone keeps an AdministratorAccess role out", ADM, ["secretsmanager:GetSecretValue"], [w.mattermost_token], {}, "resource", False),
        ("mattermost token: the SCP alone keeps an AdministratorAccess role and a widened follow-up role out", [ADM, FUPW],
         ["secretsmanager:GetSecretValue"], [w.mattermost_token], {}, "scp", False),
        ("mattermost token: the issuer's role reads it", ISS, ["secretsmanager:GetSecretValue"], [w.mattermost_token], {}, "all", True),
        ("mattermost token: the admin reads and replaces it", A, ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"], [w.mattermost_token], {}, "all", True),
        ("mattermost token: nobody else changes its policy, value or existence, even without the SCP", ADM, changes, [w.mattermost_token], {}, "resource", False),
        # The bot token: the follow-up role's alone.
        ("bot token: the issuer's role, the guard's role, a ReadOnlyAccess holder, an AdministratorAccess role and a role under /ec2pass/ cannot read it",
         [ISS, GRD, RO, ADM, PATH], ["secretsmanager:GetSecretValue"], [w.bot_token], {}, "all", False),
        ("bot token: its resource policy alone keeps an AdministratorAccess role and even a widened issuer's role out", [ADM, ISSW],
         ["secretsmanager:GetSecretValue"], [w.bot_token], {}, "resource", False),
        ("bot token: the SCP alone keeps an AdministratorAccess role and even a widened issuer's role out", [ADM, ISSW],
         ["secretsmanager:GetSecretValue"], [w.bot_token], {}, "scp", False),
        ("bot token: the follow-up role reads it", FUP, ["secretsmanager:GetSecretValue"], [w.bot_token], {}, "all", True),
        ("bot token: the admin reads and replaces it", A, ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"], [w.bot_token], {}, "all", True),
        ("bot token: nobody else changes its policy, value or existence, even without the SCP", ADM, changes, [w.bot_token], {}, "resource", False),
        ("bot token key: the follow-up role decrypts through Secrets Manager", FUP, ["kms:Decrypt"], [w.bot_key], via_sm, "all", True),
        ("bot token key: the follow-up role cannot decrypt directly", FUP, ["kms:Decrypt"], [w.bot_key], {}, "all", False),
        ("bot token key: the issuer's role, even widened, cannot decrypt with it, through Secrets Manager or not", [ISS, ISSW],
         ["kms:Decrypt", "kms:CreateGrant"], [w.bot_key], via_sm, "all", False),
        ("bot token key: its key policy lets no AdministratorAccess role decrypt", ADM, ["kms:Decrypt", "kms:CreateGrant", "kms:ReEncryptFrom"],
         [w.bot_key], via_sm, "resource", False),
        ("bot token key: the SCP alone keeps an AdministratorAccess role from decrypting", ADM, ["kms:Decrypt", "kms:CreateGrant"], [w.bot_key], {}, "scp", False),
        ("bot token key: only the admin rewrites, disables or deletes it", ADM, ["kms:PutKeyPolicy", "kms:ScheduleKeyDeletion", "kms:DisableKey"], [w.bot_key], {}, "all", False),
        ("bot token key: the admin manages it", A, ["kms:PutKeyPolicy", "kms:Decrypt"], [w.bot_key], {}, "all", True),
        ("bot token: the follow-up role, even widened, reads neither the signing secret nor the Mattermost token", FUPW,
         ["secretsmanager:GetSecretValue"], [w.secret, w.mattermost_token], {}, "all", False),
        ("bot token: the follow-up role, even widened, cannot decrypt with the signing key", FUPW,
         ["kms:Decrypt", "kms:CreateGrant"], [w.signing_key], via_sm, "all", False),
        # The reply key, with every option on: still its two readers and the admin, nobody else.
        ("reply key: with every chat option on, the issuer's role and the follow-up role still read it", [ISS, FUP],
         ["secretsmanager:GetSecretValue"], [w.reply_key], {}, "all", True),
        ("reply key's key: with every chat option on, the issuer's role and the follow-up role still decrypt it through Secrets Manager", [ISS, FUP], ["kms:Decrypt"], [w.reply_key_key], via_sm, "all", True),
        ("reply key: with every chat option on, the guard's role, a ReadOnlyAccess holder, an AdministratorAccess role and the chat channel's role cannot read it",
         [GRD, RO, ADM, CHAN], ["secretsmanager:GetSecretValue"], [w.reply_key], {}, "all", False),
        ("reply key's key: with every chat option on, the guard's role, a ReadOnlyAccess holder, an AdministratorAccess role and the chat channel's role cannot decrypt with it", [GRD, RO, ADM, CHAN], ["kms:Decrypt"], [w.reply_key_key], via_sm, "all", False),
        # The channel topic.
        ("channel: the follow-up role publishes to the channel topic", FUP, ["sns:Publish"], [w.channel_topic], {}, "all", True),
        ("channel: the follow-up role encrypts with the alert key through SNS (the topic's key)", FUP,
         ["kms:GenerateDataKey", "kms:Decrypt"], [w.alert_key], via_sns, "all", True),
        ("channel: the follow-up role uses the alert key through SNS only", FUP, ["kms:GenerateDataKey", "kms:Decrypt"], [w.alert_key], {}, "all", False),
        ("channel: the follow-up role publishes to no other topic: not the alert topic", FUP, ["sns:Publish"], [w.topic], {}, "all", False),
        ("channel: only the follow-up role publishes: no developer, no issuer or guard role", [DEV, ISS, GRD], ["sns:Publish"], [w.channel_topic], {}, "all", False),
        ("channel: the topic's own policy refuses an AdministratorAccess role's notifications, without the SCP", ADM, ["sns:Publish"], [w.channel_topic], {}, "resource", False),
        ("channel: the admin publishes (to test the channel)", A, ["sns:Publish"], [w.channel_topic], {}, "all", True),
        ("channel: a developer cannot change, re-police or delete the channel topic", DEV,
         ["sns:SetTopicAttributes", "sns:DeleteTopic", "sns:AddPermission", "sns:RemovePermission"], [w.channel_topic], {}, "all", False),
        # The chat channel's role can do nothing.
        ("channel: the chat channel's role can do nothing", CHAN,
         ["ec2:DescribeInstances", "ec2:StopInstances", "ec2:StartInstances", "ec2:CreateTags", "lambda:InvokeFunction", "dynamodb:GetItem",
          "dynamodb:Query", "secretsmanager:GetSecretValue", "sns:Publish", "iam:PassRole", "sts:AssumeRole", "cloudwatch:DeleteAlarms"],
         ["*", w.instance, w.guard_fn, w.table, w.secret, w.bot_token, w.channel_topic, w.issuer_role], {}, "all", False),
        ("channel: a developer cannot pass, re-trust or widen the chat channel's role", DEV,
         ["iam:PassRole", "iam:UpdateAssumeRolePolicy", "iam:PutRolePolicy", "iam:AttachRolePolicy"], [w.channel_role], {}, "all", False),
    ]


# The SCPs of each account of the Organization's example (docs/organization.md, "Which SCP
# where"): the member accounts carry every file but the hub's own two; the hub account all of them.
HUB_ONLY_POLICIES = ("protect-guard-scp.json", "protect-hub-scp.json")


class OrgWorld:
    """The Organization as the three templates and the policies make it: the hub in ACCOUNT
    (reading its accounts from the Organization: OrganizationUnits), a member account
    MEMBER_ACCOUNT with its spoke, the management account MANAGEMENT_ACCOUNT with the
    Organization's delegation policy, and an account outside the Organization."""

    def __init__(self, template, member, policies, org=None):
        from principalmapper.common import Node, Policy

        org = org if org is not None else load_template(ORG_TEMPLATE)
        hub = Resolver(template, HUB_UNITS_PARAMS)
        spoke = Resolver(member, SPOKE_PARAMS, where=pseudo(MEMBER_ACCOUNT, REGION))
        self.guard_role = hub.getatt("GuardRole", "Arn")
        self.issuer_role = hub.getatt("IssuerRole", "Arn")
        self.attribution_role = hub.getatt("AttributionRole", "Arn")
        self.bus = hub.getatt("HubEventBus", "Arn")
        self.hub_rule = hub.getatt("HubStateChange", "Arn")
        self.member_role = spoke.getatt("MemberRole", "Arn")
        self.lookup_role = spoke.getatt("LookupRole", "Arn")
        self.forward_role = spoke.getatt("ForwardRole", "Arn")
        self.forward_rule = spoke.getatt("ForwardRule", "Arn")
        self.forward_calls_rule = spoke.getatt("ForwardCallsRule", "Arn")
        self.forward_rule_elsewhere = self.forward_rule.replace(f":{REGION}:", f":{MEMBER_REGION}:")
        self.spoke_stack = (f"arn:aws:cloudformation:{REGION}:{MEMBER_ACCOUNT}:stack/StackSet-{STACK}-spokes-"
                            "0f0e0d0c-0000-4000-8000-0000000000aa/0f0e0d0c-0000-4000-8000-0000000000bb")
        self.outside_role = f"arn:aws:iam::{OUTSIDER}:role/{hub.params['MemberRoleName']}"
        self.instance = f"arn:aws:ec2:{REGION}:{MEMBER_ACCOUNT}:instance/i-0123456789abcdef0"
        self.instance_elsewhere = f"arn:aws:ec2:{MEMBER_REGION}:{MEMBER_ACCOUNT}:instance/i-0fedcba9876543210"
        self.hub_instance = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0aaaabbbbccccdddd"
        # The Organization's own resources, in the management account, and its delegation policy
        # (infra/organization.yaml as deployed there with CallAs SELF, for the hub in ACCOUNT).
        unit, root = ORG_UNITS.split(",")
        self.org_unit = f"arn:aws:organizations::{MANAGEMENT_ACCOUNT}:ou/{ORG_ID}/{unit}"
        self.org_root = f"arn:aws:organizations::{MANAGEMENT_ACCOUNT}:root/{ORG_ID}/{root}"
        self.org_account = f"arn:aws:organizations::{MANAGEMENT_ACCOUNT}:account/{ORG_ID}/{MEMBER_ACCOUNT}"
        self.org_policy = f"arn:aws:organizations::{MANAGEMENT_ACCOUNT}:policy/{ORG_ID}/service_control_policy/p-0a1b2c3d"
        management = Resolver(org, ORG_PARAMS, where=pseudo(MANAGEMENT_ACCOUNT, REGION))
        self.delegation = {"Version": "2012-10-17", "Statement": delegation_statements(management, org)}
        # Resource policies, each for the actions it governs: a role's trust policy decides
        # AssumeRole only (IAM actions on a role are decided by identity policies and SCPs).
        self.trusts = {}
        for logical, arn in (("MemberRole", self.member_role), ("LookupRole", self.lookup_role), ("ForwardRole", self.forward_role)):
            self.trusts[arn] = spoke.value(member["Resources"][logical]["Properties"]["AssumeRolePolicyDocument"])
        # A role of the member role's name in an outside account, trusting the guard: whoever
        # owns that account may write such a trust.
        self.trusts[self.outside_role] = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": self.guard_role}, "Action": "sts:AssumeRole"}]}
        self.bus_policy = {"Version": "2012-10-17", "Statement": bus_policy_statements(hub, template)}
        filled = json.loads(World._fill(json.dumps(policies)))

        def scps(names):
            return [[Policy("arn:aws:organizations::aws:policy/service_control_policy/p-FullAWSAccess", "FullAWSAccess", FULL_AWS_ACCESS)]
                    + [Policy(f"arn:aws:organizations::{ACCOUNT}:policy/{ORG_ID}/service_control_policy/p-{i}", n, d)
                       for i, (n, d) in enumerate(sorted(filled.items())) if n in names]]

        self.scps = {ACCOUNT: scps(set(filled)), MEMBER_ACCOUNT: scps(set(filled) - set(HUB_ONLY_POLICIES)), OUTSIDER: None}

        def node(arn, docs, trust=LAMBDA_TRUST):
            return Node(arn, "AROA" + format(abs(hash(arn)) % 10**16, "016d"),
                        [Policy(f"{arn}/policy{i}", f"policy{i}", d) for i, d in enumerate(docs)],
                        [], trust, None, 0, False, False, None, False, {})

        self.identity = {
            "the hub's guard role": resolved_policies(hub, template, "GuardRole"),
            "the hub's issuer role": resolved_policies(hub, template, "IssuerRole"),
            "the hub's attribution role": resolved_policies(Resolver(template, {**HUB_UNITS_PARAMS, **RESPONSE_ON}), template, "AttributionRole"),
            "the member role": resolved_policies(spoke, member, "MemberRole"),
            "the lookup role": resolved_policies(spoke, member, "LookupRole"),
            "the forwarding role": resolved_policies(spoke, member, "ForwardRole"),
        }
        self.who = {
            "the hub's guard role": node(self.guard_role, self.identity["the hub's guard role"]),
            "the hub's issuer role": node(self.issuer_role, self.identity["the hub's issuer role"]),
            "the hub's attribution role": node(self.attribution_role, self.identity["the hub's attribution role"]),
            "a hub AdministratorAccess role": node(f"arn:aws:iam::{ACCOUNT}:role/ops-admin", [ADMINISTRATOR_ACCESS]),
            "a hub developer": node(f"arn:aws:iam::{ACCOUNT}:role/developer", [DEVELOPER_STAND_IN]),
            "the member account's AdministratorAccess role": node(f"arn:aws:iam::{MEMBER_ACCOUNT}:role/ops-admin", [ADMINISTRATOR_ACCESS]),
            "a member-account developer": node(f"arn:aws:iam::{MEMBER_ACCOUNT}:role/developer", [DEVELOPER_STAND_IN]),
            "the member account's ec2pass admin": node(f"arn:aws:iam::{MEMBER_ACCOUNT}:role/ec2pass-admin", [ADMINISTRATOR_ACCESS]),
            "StackSets' execution role": node(f"arn:aws:iam::{MEMBER_ACCOUNT}:role/stacksets-exec-0a1b2c3d4e5f", [ADMINISTRATOR_ACCESS]),
            "the member role": node(self.member_role, self.identity["the member role"], self.trusts[self.member_role]),
            "the lookup role": node(self.lookup_role, self.identity["the lookup role"], self.trusts[self.lookup_role]),
            "the forwarding role": node(self.forward_role, self.identity["the forwarding role"], self.trusts[self.forward_role]),
            "an outside account's administrator": node(f"arn:aws:iam::{OUTSIDER}:role/ops-admin", [ADMINISTRATOR_ACCESS]),
        }

    @staticmethod
    def _account(arn):
        parts = arn.split(":")
        return parts[4] if len(parts) > 4 and parts[4] else None

    def allowed(self, who, action, resource, context=None, layers="all"):
        """As World.allowed, across accounts: the caller's account's SCPs, the resource's policy
        (a trust for AssumeRole, the bus policy for PutEvents), the organization ids AWS puts in
        the request."""
        from principalmapper.querying.query_interface import local_check_authorization_full

        principal = self.who[who]
        caller, owner = self._account(principal.arn), self._account(resource)
        org_of = {ACCOUNT: ORG_ID, MEMBER_ACCOUNT: ORG_ID, MANAGEMENT_ACCOUNT: ORG_ID}
        ctx = {"aws:RequestedRegion": resource.split(":")[3] or REGION if resource.startswith("arn:") else REGION,
               "aws:PrincipalOrgID": org_of.get(caller, OUTSIDE_ORG_ID)}
        if owner:
            ctx["aws:ResourceOrgID"] = org_of.get(owner, OUTSIDE_ORG_ID)
            ctx["aws:ResourceAccount"] = owner
        ctx.update(context or {})
        rp = None
        if layers in ("all", "resource"):
            if action == "sts:AssumeRole":
                rp = self.trusts.get(resource, {"Version": "2012-10-17", "Statement": []})
            elif resource == self.bus and action.startswith("events:"):
                rp = self.bus_policy
            elif resource.startswith("arn:aws:organizations::") and action.startswith("organizations:"):
                # An account other than the management account reaches the Organization only
                # through its delegation policy, as through a resource policy of another account.
                rp = self.delegation
        scps = self.scps.get(caller) if layers in ("all", "scp") else None
        return local_check_authorization_full(principal, action, resource, ctx, rp, owner if rp is not None else None, scps, None)


def org_claims(o):
    """The Organization's claims, evaluated over OrgWorld like claims() over World."""
    GRD, ISS, HADM, HDEV = "the hub's guard role", "the hub's issuer role", "a hub AdministratorAccess role", "a hub developer"
    MADM, MDEV, MA, EXEC = ("the member account's AdministratorAccess role", "a member-account developer",
                            "the member account's ec2pass admin", "StackSets' execution role")
    MEM, LOOK, FWD, OUT = "the member role", "the lookup role", "the forwarding role", "an outside account's administrator"
    spoke_roles = [o.member_role, o.lookup_role, o.forward_role]
    role_writes = ["iam:UpdateAssumeRolePolicy", "iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:DeleteRole",
                   "iam:DeleteRolePolicy", "iam:PutRolePermissionsBoundary", "iam:PassRole", "iam:TagRole"]
    rule_writes = ["events:DeleteRule", "events:DisableRule", "events:PutRule", "events:PutTargets", "events:RemoveTargets"]
    stack_writes = ["cloudformation:DeleteStack", "cloudformation:UpdateStack", "cloudformation:CreateChangeSet",
                    "cloudformation:ExecuteChangeSet", "cloudformation:SetStackPolicy", "cloudformation:UpdateTerminationProtection"]
    own = {"aws:TagKeys": ["Auth"]}
    org_writes = ["organizations:MoveAccount", "organizations:RemoveAccountFromOrganization", "organizations:CreateAccount",
                  "organizations:CreateOrganizationalUnit", "organizations:AttachPolicy", "organizations:DetachPolicy",
                  "organizations:UpdatePolicy", "organizations:PutResourcePolicy", "organizations:DeleteResourcePolicy"]
    return [
        # Who acts in the member accounts.
        ("org: the hub's guard role assumes the member role of a member account", GRD, ["sts:AssumeRole"], [o.member_role], {}, "all", True),
        ("org: the hub's guard role assumes no role of that name outside the Organization, whatever its trust says", GRD,
         ["sts:AssumeRole"], [o.outside_role], {}, "all", False),
        ("org: only the hub's guard role assumes the member role: not the hub's issuer, a hub administrator, the member account's own administrator, StackSets' role or an outsider",
         ASSUMERS["member role"], ["sts:AssumeRole"], [o.member_role], {}, "all", False),
        ("org: the hub's issuer role assumes the lookup role of a member account", ISS, ["sts:AssumeRole"], [o.lookup_role], {}, "all", True),
        ("org: the hub's attribution role assumes the lookup role of a member account", "the hub's attribution role", ["sts:AssumeRole"], [o.lookup_role], {}, "all", True),
        ("org: the hub's attribution role cannot assume the member role (it reads, never acts), nor a role of that name outside the Organization",
         "the hub's attribution role", ["sts:AssumeRole"], [o.member_role, o.outside_role], {}, "all", False),
        ("org: only the hub's issuer and attribution roles assume the lookup role: not the hub's guard, a hub administrator, the member account's own administrator or an outsider",
         ASSUMERS["lookup role"], ["sts:AssumeRole"], [o.lookup_role], {}, "all", False),
        ("org: the hub's issuer role cannot assume the member role", ISS, ["sts:AssumeRole"], [o.member_role], {}, "all", False),
        # What the member role and the lookup role can do there.
        ("org: the member role describes, stops, untags Auth, terminates and clears protection in every guarded region of its account", MEM,
         ["ec2:DescribeInstances", "ec2:StopInstances", "ec2:DeleteTags", "ec2:TerminateInstances", "ec2:ModifyInstanceAttribute"],
         [o.instance, o.instance_elsewhere], own, "all", True),
        ("org: the member role deletes no other tag, and never every tag", MEM, ["ec2:DeleteTags"], [o.instance], {"aws:TagKeys": ["Auth", "Name"]}, "all", False),
        ("org: the member role cannot delete every tag (a DeleteTags without keys)", MEM, ["ec2:DeleteTags"], [o.instance], {}, "all", False),
        ("org: the member role cannot start, launch, tag or exempt an instance", MEM,
         ["ec2:StartInstances", "ec2:RunInstances", "ec2:CreateTags"], [o.instance], {"aws:TagKeys": ["ec2pass:exempt"]}, "all", False),
        ("org: the member role touches no instance of another account", MEM, ["ec2:StopInstances", "ec2:TerminateInstances"], [o.hub_instance], {}, "all", False),
        ("org: the member role cannot change roles, rules or stacks", MEM,
         ["iam:UpdateAssumeRolePolicy", "iam:PassRole", "events:DeleteRule", "cloudformation:DeleteStack", "sts:AssumeRole"],
         [o.member_role, o.forward_rule, o.spoke_stack], {}, "all", False),
        ("org: the lookup role describes instances", LOOK, ["ec2:DescribeInstances"], ["*"], {}, "all", True),
        ("org: the lookup role can do nothing else to an instance", LOOK,
         ["ec2:StopInstances", "ec2:TerminateInstances", "ec2:DeleteTags", "ec2:CreateTags", "ec2:ModifyInstanceAttribute", "ec2:GetConsoleOutput"],
         [o.instance], own, "all", False),
        # The hub bus.
        ("org: a member account's forwarding role puts events on the hub bus", FWD, ["events:PutEvents"], [o.bus], {}, "all", True),
        ("org: nobody outside the Organization puts events on the hub bus", OUT, ["events:PutEvents"], [o.bus], {}, "all", False),
        ("org: the bus policy alone keeps an outsider off the hub bus", OUT, ["events:PutEvents"], [o.bus], {}, "resource", False),
        ("org: a member-account developer cannot put events on the hub bus (only the forwarding rules do)", MDEV,
         ["events:PutEvents"], [o.bus], {}, "all", False),
        ("org: the forwarding role puts events on no other bus", FWD, ["events:PutEvents"],
         [f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default", f"arn:aws:events:{REGION}:{OUTSIDER}:event-bus/collector"], {}, "all", False),
        ("org: a hub developer cannot delete, archive or replay the hub bus", HDEV,
         ["events:DeleteEventBus", "events:UpdateEventBus", "events:CreateArchive", "events:StartReplay"], [o.bus], {}, "all", False),
        # PutPermission and RemovePermission name no resource (the Service Authorization
        # Reference; parliament's definitions): AWS evaluates them against "*".
        ("org: a hub developer cannot re-police the hub bus (PutPermission, RemovePermission)", HDEV,
         ["events:PutPermission", "events:RemovePermission"], ["*"], {}, "all", False),
        ("org: a hub developer cannot disable or retarget the hub bus's rule", HDEV, rule_writes, [o.hub_rule], {}, "all", False),
        ("org: a hub developer cannot put events on the hub bus", HDEV, ["events:PutEvents"], [o.bus], {}, "all", False),
        # The spoke, from inside the member account.
        ("org: a member-account administrator cannot change, re-trust, delete, tag or pass the member, lookup or forwarding roles", MADM,
         role_writes, spoke_roles, {}, "all", False),
        ("org: the SCP alone keeps a member-account administrator from re-trusting the member role", MADM,
         ["iam:UpdateAssumeRolePolicy", "iam:AttachRolePolicy"], [o.member_role], {}, "scp", False),
        ("org: a member-account administrator cannot make a role named like the spoke's, like the ec2pass admin, or like StackSets' execution role", MADM,
         ["iam:CreateRole"], [f"arn:aws:iam::{MEMBER_ACCOUNT}:role/ec2pass-member-forward-xx-east-9", f"arn:aws:iam::{MEMBER_ACCOUNT}:role/ec2pass-memberx",
                              f"arn:aws:iam::{MEMBER_ACCOUNT}:role/ec2pass-admin", f"arn:aws:iam::{MEMBER_ACCOUNT}:role/stacksets-exec-borrowed"], {}, "all", False),
        ("org: a member-account administrator cannot re-trust StackSets' execution role or pass it", MADM,
         ["iam:UpdateAssumeRolePolicy", "iam:PassRole", "iam:AttachRolePolicy"], [f"arn:aws:iam::{MEMBER_ACCOUNT}:role/stacksets-exec-0a1b2c3d4e5f"], {}, "all", False),
        ("org: a member-account administrator cannot delete, disable or retarget the forwarding rules, in any region", MADM,
         rule_writes, [o.forward_rule, o.forward_rule_elsewhere, o.forward_calls_rule], {}, "all", False),
        ("org: a member-account administrator cannot delete or update the StackSet's stack", MADM, stack_writes, [o.spoke_stack], {}, "all", False),
        ("org: a member-account developer cannot delete an Auth tag", MDEV, ["ec2:DeleteTags"], [o.instance], own, "all", False),
        ("org: StackSets' execution role manages the spoke", EXEC,
         ["iam:CreateRole", "iam:UpdateAssumeRolePolicy", "iam:PutRolePolicy", "iam:PassRole", "events:PutRule", "events:PutTargets",
          "cloudformation:UpdateStack", "cloudformation:DeleteStack"], spoke_roles[:1] + [o.forward_rule, o.spoke_stack], {}, "all", True),
        ("org: the member account's ec2pass admin manages the spoke", MA, role_writes + rule_writes + stack_writes,
         spoke_roles[:1] + [o.forward_rule, o.spoke_stack], {}, "all", True),
        ("org (control): a member-account administrator still manages roles, rules, stacks and bus policies of their own", MADM,
         ["iam:UpdateAssumeRolePolicy", "events:PutRule", "cloudformation:DeleteStack", "events:PutPermission"],
         [f"arn:aws:iam::{MEMBER_ACCOUNT}:role/my-app", f"arn:aws:events:{REGION}:{MEMBER_ACCOUNT}:rule/my-app-nightly",
          f"arn:aws:cloudformation:{REGION}:{MEMBER_ACCOUNT}:stack/my-app/0f0e0d0c-0000-4000-8000-0000000000cc", "*"], {}, "all", True),
        ("org (control): without the SCPs the member-account administrator could re-trust the member role", MADM,
         ["iam:UpdateAssumeRolePolicy"], [o.member_role], {}, "none", True),
        # Reading the accounts from the Organization (OrganizationUnits): the hub's roles, and the
        # delegation policy of the management account.
        ("org: the hub's guard and issuer roles list the accounts and OUs under a guarded OU and the root (their own policy, and the Organization's delegation policy)",
         [GRD, ISS], ORG_READS, [o.org_unit, o.org_root], {}, "all", True),
        ("org: the hub's guard and issuer roles read nothing else of the Organization and change nothing in it", [GRD, ISS],
         ["organizations:ListAccounts", "organizations:DescribeAccount", "organizations:ListChildren", "organizations:DescribeOrganization",
          *org_writes], [o.org_unit, o.org_root, o.org_account, o.org_policy], {}, "all", False),
        ("org: the delegation policy lets the hub account only list: not even a hub AdministratorAccess role moves, removes or creates an account, or changes a policy or the delegation",
         HADM, org_writes, [o.org_unit, o.org_root, o.org_account, o.org_policy], {}, "all", False),
        ("org: the delegation policy alone keeps an outside account's administrator and a member account's from listing the Organization's accounts",
         [OUT, MADM], ORG_READS, [o.org_unit, o.org_root], {}, "resource", False),
        ("org (control): a hub AdministratorAccess role lists the Organization's accounts too: the delegation names the hub account, and IAM decides within it",
         HADM, ["organizations:ListAccountsForParent"], [o.org_unit], {}, "all", True),
    ]


ASSUMERS = {  # the principals a claim with who=None is evaluated for: everyone but the one role trusted
    "member role": ["the hub's issuer role", "a hub AdministratorAccess role", "the member account's AdministratorAccess role",
                    "StackSets' execution role", "an outside account's administrator"],
    "lookup role": ["the hub's guard role", "a hub AdministratorAccess role", "the member account's AdministratorAccess role",
                    "an outside account's administrator"],
}


def evaluate_claims(template, policies, member=None, org=None):
    """[(name, holds, message)] for every claim: the account's (World), then the Organization's
    (OrgWorld)."""
    member = member if member is not None else load_template(MEMBER_TEMPLATE)
    org = org if org is not None else load_template(ORG_TEMPLATE)
    try:
        w = World(template, policies)
    except ImportError as e:
        return [("the simulator", False, f"Principal Mapper is not installed ({e}): run make venv (dev/requirements.txt)")]
    except Exception as e:
        return [("the simulator's world", False, f"the template or the policies cannot be resolved for the simulator: {e!r}")]
    worlds = [(w, claims(w))]
    try:
        c = World(template, policies, OPTIONS_PARAMS)
        worlds.append((c, chat_claims(c) + response_claims(c)))
    except Exception as e:
        return [("the options' world", False, f"the template or the policies cannot be resolved for the simulator with every option (chat, Response=on, CreateTrail=true): {e!r}")]
    try:
        o = OrgWorld(template, member, policies, org)
        worlds.append((o, org_claims(o)))
    except Exception as e:
        return [("the Organization's world", False, f"the templates or the policies cannot be resolved for the Organization's simulator: {e!r}")]
    results = []
    for world, listed_claims in worlds:
        for name, who, acts, resources, context, layers, expected in listed_claims:
            people = who if isinstance(who, list) else [who]
            wrong = [(p, a, res) for p in people for a in acts for res in resources
                     if world.allowed(p, a, res, context, layers) != expected]
            if wrong:
                p, a, res = wrong[0]
                results.append((name, False, f"policy claim '{name}' does not hold: Principal Mapper says {p} "
                                             f"{'cannot' if expected else 'can'} {a} on {res}"
                                             + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else "")))
            else:
                results.append((name, True, f"{len(people) * len(acts) * len(resources)} request(s)"))
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
    "EC2PASS_REPLY_KEY_SECRET_ARN": "the stack's own secret, whose value CloudFormation generates",
    "EC2PASS_STATE_CHANGE_QUEUE_URL": "the stack's own state-change queue",
    # Empty without their option (chat_invariants checks both values).
    "EC2PASS_MATTERMOST_TOKEN_SECRET_ARN": "the stack's own secret, when MattermostOrigin is set",
    "EC2PASS_CHAT_TOPIC_ARN": "the stack's own channel topic, when ChannelAlerts is Enabled",
    "EC2PASS_SLACK_BOT_TOKEN_SECRET_ARN": "the stack's own secret, when SlackBotDirectMessages is Enabled",
    "EC2PASS_SLACK_API": "fixed: Slack's Web API, the only host the bot token is sent to",
    # The attribution function's (issue 14).
    "EC2PASS_ACCOUNT": "the stack's own account, the only one the response acts in",
    "EC2PASS_CALL_QUEUE_URL": "the stack's own call queue",
}


def settings_read(function):
    """The EC2PASS_* variables that `impl IssuerConfig`, `impl GuardConfig` or `impl FollowupConfig`
    reads, from the source.
    Retired variables, which the code names only to refuse them, do not count."""
    source = CONFIG_RS.read_text()

    def block(opening):
        start = source.index(opening)
        return source[start:source.find("\n}\n", start)]

    body = block(f"impl {function} {{")
    # Module-level readers such as `table_name(env)` count for the impl that calls them, their
    # signature on one line or several.
    for helper in re.findall(r"^(?:pub )?fn (\w+)\(\s*env: &Env", source, re.M):
        if f"{helper}(env" in body:
            body += block(f"fn {helper}(")
    # So do associated readers of other modules of shared/, such as `Hub::from_env(env, ...)`
    # (shared/src/org.rs): the method's body, up to the end of its indented block.
    for kind, method in sorted(set(re.findall(r"\b([A-Z]\w*)::(\w+)\(\s*env\b", body))):
        for rs in sorted((ROOT / "shared" / "src").rglob("*.rs")):
            text = rs.read_text(encoding="utf-8")
            impl = text.find(f"impl {kind} {{")
            start = text.find(f"fn {method}(", impl) if impl >= 0 else -1
            if start >= 0:
                end = text.find("\n    }\n", start)
                body += text[start:end if end >= 0 else len(text)]
                break
    return set(re.findall(r'"(EC2PASS_[A-Z_]+)"', body)) - set(RETIRED)


def settings_match(template):
    """Every setting a function reads is in its template environment, backed by a parameter, and documented."""
    problems = []
    res = template.get("Resources", {})
    documented = CONFIG_DOC.read_text()
    for name, config in (("IssuerFunction", "IssuerConfig"), ("GuardFunction", "GuardConfig"), ("FollowupFunction", "FollowupConfig")):
        env = res.get(name, {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
        if f"impl {config} {{" not in CONFIG_RS.read_text():
            problems.append(f"shared/src/config.rs: no impl {config}, the settings {name} reads")
            continue
        read = settings_read(config)
        for var in sorted(read - set(env)):
            problems.append(f"{name}: the template does not set {var}, which {config} reads")
        for var in sorted(set(env) - read):
            problems.append(f"{name}: the template sets {var}, which {config} never reads")
        problems += documented_settings(name, env, template, documented)
    # The attribution function (issue 14) reads GuardConfig for its table, topic and hub, and its
    # own settings (guard/src/bin/attribution.rs, Rails::from_env in guard/src/respond.rs); it
    # needs none of the guard's decision settings, so it is given exactly its own.
    env = res.get("AttributionFunction", {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
    read = settings_read("GuardConfig")
    for rs in ATTRIBUTION_SOURCES:
        read |= set(re.findall(r'"(EC2PASS_[A-Z_]+)"', rs.read_text(encoding="utf-8"))) if rs.exists() else set()
    for var in sorted((set(ATTRIBUTION_VARIABLES) | set(ORG_VARIABLES["AttributionFunction"])) - read):
        problems.append(f"AttributionFunction: the template must set {var}, but the code never reads it (guard/src/bin/attribution.rs, guard/src/respond.rs, GuardConfig)")
    for var in sorted(set(env) - read):
        problems.append(f"AttributionFunction: the template sets {var}, which the attribution never reads")
    problems += documented_settings("AttributionFunction", env, template, documented)
    for param in template.get("Parameters", {}):
        if f"`{param}`" not in documented:
            problems.append(f"docs/configuration.md does not describe the parameter {param}")
    return problems


def documented_settings(name, env, template, documented):
    """Each variable of a function's environment has its row in docs/configuration.md, naming the
    parameter it is taken from (or it is one of NOT_PARAMETERS)."""
    problems = []
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
    return problems


def parameters_behind(value, parameters):
    """The template parameters a value refers to, through Ref, Sub or If."""
    text = json.dumps(value)
    named = set(re.findall(r'"Ref": "([A-Za-z0-9]+)"', text)) | set(re.findall(r"\$\{([A-Za-z0-9]+)\}", text))
    return sorted(named & set(parameters))


def check(template, path=None, policies=None, lint=True, member=None, org=None, member_path=None, org_path=None, manifest=None):
    """All findings for the hub template (parsed), the spoke and the StackSet (parsed; the files
    by default) and the policies, linting the files at the paths given or temporary copies
    (lint=False: everything but cfn-lint and the SAM transform, the slow part)."""
    policies = policies if policies is not None else load_policies()
    member = member if member is not None else load_template(MEMBER_TEMPLATE)
    org = org if org is not None else load_template(ORG_TEMPLATE)
    findings = []
    findings += policy_invariants(template, policies)
    if lint:
        findings += lint_and_translate(template, path, [("infra/member.yaml", member, member_path),
                                                        ("infra/organization.yaml", org, org_path)])
    for layer, run in (("invariants", lambda: invariants(template)), ("hub invariants", lambda: hub_invariants(template)),
                       ("spoke invariants", lambda: member_invariants(template, member)),
                       ("StackSet invariants", lambda: org_invariants(org, member))):
        try:
            findings += run()
        except Exception as e:  # a broken copy can break the checks' own assumptions
            findings.append(f"{layer}: the templates cannot be read: {e!r}")
    findings += local_table_matches(template)
    findings += samconfig_matches(template)
    findings += manifest_invariants(manifest if manifest is not None else MANIFEST.read_text(encoding="utf-8"))
    findings += settings_match(template)
    stack_policies = {}
    for label, parameters in (("", {}), ("with every option: ", OPTIONS_PARAMS)):
        try:
            world = World(template, policies, parameters)
            stack_policies.update({f"{label}{who} role policy {i}": d for who, docs in world.identity.items() for i, d in enumerate(docs)})
            stack_policies.update({f"{label}resource policy of {arn}": d for arn, d in world.resource_policies.items()})
        except Exception:
            pass
    try:
        o = OrgWorld(template, member, policies, org)
        stack_policies.update({f"Organization: {who} policy {i}": d for who, docs in o.identity.items() for i, d in enumerate(docs)})
        stack_policies["Organization: the hub bus's policy"] = o.bus_policy
        stack_policies["Organization: the delegation policy"] = o.delegation
    except Exception:
        pass
    findings += parliament_findings(policies, stack_policies)
    findings += [message for _, holds, message in evaluate_claims(template, policies, member, org) if not holds]
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

    # Issue 12: the hub.
    def hub_policy(t, role, name):
        for pol in t["Resources"][role]["Properties"]["Policies"]:
            if isinstance(pol, dict) and "Fn::If" in pol and pol["Fn::If"][1].get("PolicyName") == name:
                return pol["Fn::If"][1]["PolicyDocument"]["Statement"][0]
        raise KeyError(name)

    def guard_assumes_roles_outside_the_organization(t):
        hub_policy(t, "GuardRole", "act-in-member-accounts").pop("Condition")

    def guard_assumes_any_role(t):
        hub_policy(t, "GuardRole", "act-in-member-accounts")["Resource"] = {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/*"}

    def issuer_assumes_the_member_role(t):
        hub_policy(t, "IssuerRole", "look-up-in-member-accounts")["Resource"] = {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/${MemberRoleName}"}

    def issuer_assumes_roles_outside_the_organization(t):
        hub_policy(t, "IssuerRole", "look-up-in-member-accounts")["Condition"] = {
            "StringEquals": {"aws:PrincipalOrgID": {"Ref": "OrganizationId"}}}

    def guard_assumes_roles_without_an_organization(t):
        # The policy outside its If: a single-account stack that may assume roles everywhere.
        pols = t["Resources"]["GuardRole"]["Properties"]["Policies"]
        i = next(i for i, x in enumerate(pols) if isinstance(x, dict) and "Fn::If" in x and x["Fn::If"][0] == "IsHub")
        pols[i] = pols[i]["Fn::If"][1]

    def hub_bus_open_to_every_account(t):
        t["Resources"]["HubEventBusPolicy"]["Properties"]["Statement"].pop("Condition")

    def hub_bus_open_to_the_organization_of_the_caller(t):
        # aws:PrincipalOrgID compared with anything but OrganizationId admits another Organization.
        t["Resources"]["HubEventBusPolicy"]["Properties"]["Statement"]["Condition"] = {
            "StringLike": {"aws:PrincipalOrgID": "o-*"}}

    def hub_bus_lets_the_organization_manage_rules(t):
        t["Resources"]["HubEventBusPolicy"]["Properties"]["Statement"]["Action"] = ["events:PutEvents", "events:PutRule"]

    def hub_bus_in_every_stack(t):
        t["Resources"]["HubEventBus"].pop("Condition")

    def hub_bus_renamed(t):
        t["Resources"]["HubEventBus"]["Properties"]["Name"] = {"Fn::Sub": "${AWS::StackName}-organization"}

    def hub_rule_misses_running(t):
        t["Resources"]["HubStateChange"]["Properties"]["EventPattern"]["detail"]["state"] = ["pending"]

    def hub_rule_on_the_default_bus(t):
        t["Resources"]["HubStateChange"]["Properties"].pop("EventBusName")

    def hub_rule_invokes_the_guard(t):
        t["Resources"]["HubStateChange"]["Properties"]["Targets"][0]["Arn"] = {"Fn::GetAtt": ["GuardFunction", "Arn"]}

    def hub_rule_retries_too_long(t):
        t["Resources"]["HubStateChange"]["Properties"]["Targets"][0]["RetryPolicy"]["MaximumEventAgeInSeconds"] = 600

    def hub_rule_without_a_dlq(t):
        t["Resources"]["HubStateChange"]["Properties"]["Targets"][0].pop("DeadLetterConfig")

    def queue_refuses_the_hub_rule(t):
        st = next(s for s in queue_statements(t, "StateChangeQueue") if s["Sid"] == "TheRuleSends")
        st["Condition"]["ArnEquals"]["aws:SourceArn"] = {"Fn::GetAtt": ["GuardFunctionStateChange", "Arn"]}

    def queue_deny_refuses_the_hub_rule(t):
        st = next(s for s in queue_statements(t, "StateChangeQueue") if s["Sid"] == "NobodyElseSends")
        st["Condition"]["ArnNotEquals"]["aws:SourceArn"] = {"Fn::GetAtt": ["GuardFunctionStateChange", "Arn"]}

    def failures_refuse_the_hub_rule(t):
        st = next(s for s in queue_statements(t, "GuardFailures") if s["Sid"] == "TheRuleSendsWhatItCannotDeliver")
        st["Condition"]["ArnEquals"]["aws:SourceArn"] = {"Fn::GetAtt": ["GuardFunctionStateChange", "Arn"]}

    def forget_the_hub_rule_failures_alarm(t):
        t["Resources"].pop("HubStateChangeRuleFailuresAlarm")

    def hub_rule_alarm_without_its_bus(t):
        dims = t["Resources"]["HubStateChangeRuleFailuresAlarm"]["Properties"]["Dimensions"]
        dims[:] = [d for d in dims if d["Name"] != "EventBusName"]

    def member_role_always_set(t):
        t["Resources"]["GuardFunction"]["Properties"]["Environment"]["Variables"]["EC2PASS_MEMBER_ROLE"] = {"Ref": "MemberRoleName"}

    def accounts_from_the_wrong_parameter(t):
        t["Resources"]["IssuerFunction"]["Properties"]["Environment"]["Variables"]["EC2PASS_ACCOUNTS"] = {
            "Fn::If": ["IsHub", {"Ref": "GuardedRegions"}, ""]}

    def forget_the_lookup_role(t):
        t["Resources"]["IssuerFunction"]["Properties"]["Environment"]["Variables"].pop("EC2PASS_LOOKUP_ROLE")

    def hub_by_default(t):
        t["Parameters"]["OrganizationId"]["Default"] = "o-a1b2c3d4e5"

    def member_role_renamed_by_default(t):
        t["Parameters"]["MemberRoleName"]["Default"] = "ec2pass-spoke"

    def hub_settings_accepted_without_an_organization(t):
        t["Rules"].pop("HubSettingsNeedAnOrganization")

    def forget_the_hub_bus_output(t):
        t["Outputs"].pop("HubEventBusArn")

    # Reading the accounts from the Organization (OrganizationUnits).
    def guard_may_list_every_organizations_action(t):
        hub_policy(t, "GuardRole", "read-the-organization")["Action"] = ["organizations:List*"]

    def guard_may_describe_the_organization(t):
        hub_policy(t, "GuardRole", "read-the-organization")["Action"].append("organizations:DescribeAccount")

    def issuer_reads_organization_without_units(t):
        # The statement outside its If: every stack, hub or not, may list the Organization.
        pols = t["Resources"]["IssuerRole"]["Properties"]["Policies"]
        i = next(i for i, x in enumerate(pols) if isinstance(x, dict) and "Fn::If" in x and x["Fn::If"][0] == "ReadsOrganization")
        pols[i] = pols[i]["Fn::If"][1]

    def organization_read_by_every_hub(t):
        t["Conditions"]["ReadsOrganization"] = {"Condition": "IsHub"}

    def org_units_not_passed_to_the_guard(t):
        t["Resources"]["GuardFunction"]["Properties"]["Environment"]["Variables"].pop("EC2PASS_ORG_UNITS")

    def org_units_passed_without_an_organization(t):
        t["Resources"]["IssuerFunction"]["Properties"]["Environment"]["Variables"]["EC2PASS_ORG_UNITS"] = {"Ref": "OrganizationUnits"}

    def org_units_accepted_without_an_organization(t):
        t["Rules"]["HubSettingsNeedAnOrganization"]["Assertions"][0]["Assert"]["Fn::And"].pop()

    def hub_with_units_still_needs_member_accounts(t):
        t["Rules"]["AnOrganizationNeedsAccountsAndRegions"]["Assertions"][0]["Assert"] = {
            "Fn::Not": [{"Fn::Equals": [{"Ref": "MemberAccounts"}, ""]}]}

    def org_units_with_spaces(t):
        t["Parameters"]["OrganizationUnits"]["AllowedPattern"] = "^.*$"

    # Issue 13: the follow-ups.
    def followup_statements(t):
        return t["Resources"]["FollowupRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]

    def followup_statement(t, sid):
        return next(st for st in followup_statements(t) if st.get("Sid") == sid)

    def followup_may_describe_instances(t):
        followup_statements(t).append({"Sid": "Peek", "Effect": "Allow", "Action": ["ec2:DescribeInstances"], "Resource": "*"})

    def followup_may_publish(t):
        followup_statements(t).append({"Sid": "Tell", "Effect": "Allow", "Action": ["sns:Publish"], "Resource": {"Ref": "AlertTopic"}})

    def followup_reads_secrets(t):
        followup_statements(t).append({"Sid": "Peek", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": {"Ref": "SigningSecret"}})

    def followup_queries_the_whole_table(t):
        followup_statement(t, "RepliesDue")["Resource"] = {"Fn::GetAtt": ["Table", "Arn"]}

    def followup_changes_passwords(t):
        followup_statement(t, "TakeAndSettleReplyPosts")["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"].append("pw#*")

    def followup_reads_verdicts(t):
        followup_statement(t, "ReadRepliesAndPasswords")["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"].append("verdict#*")

    def followup_leading_keys_without_null(t):
        followup_statement(t, "ReadRepliesAndPasswords")["Condition"].pop("Null")

    def followup_takes_from_every_queue(t):
        followup_statement(t, "TakeAlertsFromTheQueue")["Resource"] = "*"

    def followup_built_from_the_issuer_binary(t):
        t["Resources"]["FollowupFunction"]["Metadata"]["BuildProperties"]["Binary"] = "issuer"

    def followup_queue_open_to_anyone(t):
        next(s for s in queue_statements(t, "FollowupQueue") if s["Sid"] == "TheAlertTopicSends").pop("Condition")

    def followup_queue_admits_any_sender(t):
        drop_queue_statement(t, "FollowupQueue", "NobodyElseSends")

    def followup_queue_refuses_the_topic(t):
        st = next(s for s in queue_statements(t, "FollowupQueue") if s["Sid"] == "NobodyElseSends")
        st["Condition"]["ArnNotEquals"].pop("aws:SourceArn")

    def followup_queue_drainable_by_anyone(t):
        drop_queue_statement(t, "FollowupQueue", "OnlyTheFollowupTakesThem")

    def followup_without_dlq(t):
        t["Resources"]["FollowupQueue"]["Properties"].pop("RedrivePolicy")

    def followup_without_the_failures_alarm(t):
        t["Resources"].pop("FollowupFailuresAlarm")

    def followup_subscription_without_filter(t):
        props = t["Resources"]["FollowupSubscription"]["Properties"]
        props.pop("FilterPolicy")
        props.pop("FilterPolicyScope")

    def followup_subscription_hears_everything_but_summaries(t):
        t["Resources"]["FollowupSubscription"]["Properties"]["FilterPolicy"] = {"verdict": [{"anything-but": "summary"}]}

    def followup_subscription_raw(t):
        t["Resources"]["FollowupSubscription"]["Properties"]["RawMessageDelivery"] = True

    def followup_without_the_schedule(t):
        t["Resources"]["FollowupFunction"]["Properties"]["Events"].pop("Expiries")

    def followup_esm_without_partial_batch_responses(t):
        t["Resources"]["FollowupFunction"]["Properties"]["Events"]["Alerts"]["Properties"].pop("FunctionResponseTypes")

    def issuer_reads_reply_items(t):
        issuer_statement(t, "WriteTheReplyItem")["Action"].append("dynamodb:GetItem")

    def issuer_cannot_put_the_reply(t):
        sts = t["Resources"]["IssuerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        sts[:] = [s for s in sts if s.get("Sid") != "WriteTheReplyItem"]

    def reply_origins_not_from_the_parameter(t):
        t["Resources"]["IssuerFunction"]["Properties"]["Environment"]["Variables"]["EC2PASS_REPLY_ORIGINS"] = "https://hooks.slack.com"

    def reply_origins_take_any_scheme(t):
        t["Parameters"]["ReplyOrigins"]["AllowedPattern"] = "^.*$"

    def table_without_the_replies_index(t):
        props = t["Resources"]["Table"]["Properties"]
        props["GlobalSecondaryIndexes"] = [i for i in props["GlobalSecondaryIndexes"] if i["IndexName"] != "replies-due"]


    # Issue 13, follow-ups: the by-instance index and `status`.
    def table_without_the_by_instance_index(t):
        props = t["Resources"]["Table"]["Properties"]
        props["GlobalSecondaryIndexes"] = [i for i in props["GlobalSecondaryIndexes"] if i["IndexName"] != "by-instance"]
        props["AttributeDefinitions"] = [a for a in props["AttributeDefinitions"] if a["AttributeName"] not in ("instance_id", "decided_at")]

    def by_instance_index_keys_only(t):
        idx = next(i for i in t["Resources"]["Table"]["Properties"]["GlobalSecondaryIndexes"] if i["IndexName"] == "by-instance")
        idx["Projection"] = {"ProjectionType": "KEYS_ONLY"}

    def by_instance_index_by_launch_time(t):
        idx = next(i for i in t["Resources"]["Table"]["Properties"]["GlobalSecondaryIndexes"] if i["IndexName"] == "by-instance")
        idx["KeySchema"][1]["AttributeName"] = "expires_at"

    def issuer_queries_every_index(t):
        issuer_statement(t, "StatusOfAnInstance")["Resource"] = {"Fn::Sub": "${Table.Arn}/index/*"}

    def issuer_queries_the_table(t):
        issuer_statement(t, "StatusOfAnInstance")["Resource"] = {"Fn::GetAtt": ["Table", "Arn"]}

    def issuer_queries_the_alerts_due(t):
        issuer_statement(t, "StatusOfAnInstance")["Resource"] = {"Fn::Sub": "${Table.Arn}/index/alerts-due"}

    def issuer_scans_by_instance(t):
        issuer_statement(t, "StatusOfAnInstance")["Action"].append("dynamodb:Scan")

    def issuer_cannot_tell_the_status(t):
        sts = t["Resources"]["IssuerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        sts[:] = [s for s in sts if s.get("Sid") != "StatusOfAnInstance"]

    def guard_queries_by_instance(t):
        t["Resources"]["GuardRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"].append(
            {"Sid": "Status", "Effect": "Allow", "Action": ["dynamodb:Query"], "Resource": {"Fn::Sub": "${Table.Arn}/index/by-instance"}})

    # The channel alerts.
    def channel_policy(t):
        pol = next(x for x in t["Resources"]["FollowupRole"]["Properties"]["Policies"]
                   if isinstance(x, dict) and "Fn::If" in x and x["Fn::If"][1].get("PolicyName") == "channel-alerts")
        return pol

    def channel_statement(t, sid):
        return next(st for st in channel_policy(t)["Fn::If"][1]["PolicyDocument"]["Statement"] if st["Sid"] == sid)

    def channel_alerts_by_default(t):
        t["Parameters"]["ChannelAlerts"]["Default"] = "Enabled"

    def channel_topic_unencrypted(t):
        t["Resources"]["ChannelTopic"]["Properties"].pop("KmsMasterKeyId")

    def channel_topic_under_the_aws_managed_key(t):
        t["Resources"]["ChannelTopic"]["Properties"]["KmsMasterKeyId"] = "alias/aws/sns"

    def channel_topic_unnamed(t):
        t["Resources"]["ChannelTopic"]["Properties"].pop("TopicName")

    def channel_topic_in_every_stack(t):
        t["Resources"]["ChannelTopic"].pop("Condition")
        t["Resources"]["ChannelTopicPolicy"].pop("Condition")

    def followup_publishes_anywhere(t):
        channel_statement(t, "PublishToTheChannelTopic")["Resource"] = "*"

    def followup_publishes_to_the_alert_topic(t):
        channel_statement(t, "PublishToTheChannelTopic")["Resource"] = {"Ref": "AlertTopic"}

    def followup_uses_the_alert_key_directly(t):
        channel_statement(t, "ChannelTopicEncryption").pop("Condition")

    def followup_publishes_without_channel_alerts(t):
        pols = t["Resources"]["FollowupRole"]["Properties"]["Policies"]
        pols[:] = [p["Fn::If"][1] if isinstance(p, dict) and "Fn::If" in p else p for p in pols]

    def channel_topic_open_to_every_publisher(t):
        t["Resources"].pop("ChannelTopicPolicy")

    def channel_topic_policy_lets_the_issuer_publish(t):
        st = t["Resources"]["ChannelTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
        st["Condition"]["ArnNotEquals"]["aws:PrincipalArn"].append({"Fn::GetAtt": ["IssuerRole", "Arn"]})

    def chat_topic_always_passed(t):
        t["Resources"]["FollowupFunction"]["Properties"]["Environment"]["Variables"]["EC2PASS_CHAT_TOPIC_ARN"] = {"Ref": "AlertTopic"}

    def chat_topic_never_passed(t):
        t["Resources"]["FollowupFunction"]["Properties"]["Environment"]["Variables"].pop("EC2PASS_CHAT_TOPIC_ARN")

    def chatbot_without_the_deny_all_guardrail(t):
        t["Resources"]["ChannelConfiguration"]["Properties"].pop("GuardrailPolicies")

    def chatbot_guardrail_read_only(t):
        t["Resources"]["ChannelConfiguration"]["Properties"]["GuardrailPolicies"] = [
            {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/ReadOnlyAccess"}]

    def chatbot_lets_members_pick_their_roles(t):
        t["Resources"]["ChannelConfiguration"]["Properties"]["UserRoleRequired"] = True

    def chatbot_hears_the_alert_topic(t):
        t["Resources"]["ChannelConfiguration"]["Properties"]["SnsTopicArns"] = [{"Ref": "ChannelTopic"}, {"Ref": "AlertTopic"}]

    def channel_role_reads_everything(t):
        t["Resources"]["ChannelRole"]["Properties"]["ManagedPolicyArns"] = [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/ReadOnlyAccess"}]

    def channel_role_with_an_inline_policy(t):
        t["Resources"]["ChannelRole"]["Properties"]["Policies"] = [{"PolicyName": "describe", "PolicyDocument": {
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["ec2:DescribeInstances"], "Resource": "*"}]}}]

    def channel_role_trusts_lambda(t):
        t["Resources"]["ChannelRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] = {"Service": "lambda.amazonaws.com"}

    def chatbot_channel_without_its_ids(t):
        t["Conditions"]["HasChatbotChannel"] = {"Condition": "ForwardsChannelAlerts"}

    def chatbot_ids_accepted_without_channel_alerts(t):
        t["Rules"].pop("ChatbotChannelNeedsChannelAlerts")

    def chatbot_workspace_accepted_alone(t):
        t["Rules"].pop("ChatbotChannelNeedsBothIds")

    def forget_the_channel_topic_output(t):
        t["Outputs"].pop("ChannelTopicArn")

    # Mattermost as a second front.
    def mattermost_origin_takes_any_url(t):
        t["Parameters"]["MattermostOrigin"]["AllowedPattern"] = "^.*$"

    def mattermost_origin_takes_http(t):
        t["Parameters"]["MattermostOrigin"]["AllowedPattern"] = "^(https?://[a-z0-9.-]+(:[0-9]+)?)?$"

    def mattermost_token_under_the_default_key(t):
        t["Resources"]["MattermostToken"]["Properties"].pop("KmsKeyId")

    def mattermost_token_value_in_the_template(t):
        t["Resources"]["MattermostToken"]["Properties"]["SecretString"] = "9a8b7c6d5e4f3g2h1i0jklmnop"

    def mattermost_token_readable_by_the_guard(t):
        st = t["Resources"]["MattermostTokenPolicy"]["Properties"]["ResourcePolicy"]["Statement"][0]
        st["Condition"]["ArnNotEquals"]["aws:PrincipalArn"].append({"Fn::GetAtt": ["GuardRole", "Arn"]})

    def mattermost_token_without_its_policy(t):
        t["Resources"].pop("MattermostTokenPolicy")

    def mattermost_token_in_every_stack(t):
        t["Resources"]["MattermostToken"].pop("Condition")
        t["Resources"]["MattermostTokenPolicy"].pop("Condition")

    def mattermost_token_always_passed(t):
        t["Resources"]["IssuerFunction"]["Properties"]["Environment"]["Variables"]["EC2PASS_MATTERMOST_TOKEN_SECRET_ARN"] = {"Ref": "SigningSecret"}

    def issuer_cannot_read_the_mattermost_token(t):
        st = t["Resources"]["IssuerSecretAccess"]["Properties"]["PolicyDocument"]["Statement"][0]
        st["Resource"] = [{"Ref": "SigningSecret"}]

    def issuer_reads_every_secret(t):
        t["Resources"]["IssuerSecretAccess"]["Properties"]["PolicyDocument"]["Statement"][0]["Resource"] = "*"

    def followup_posts_to_no_mattermost(t):
        t["Resources"]["FollowupFunction"]["Properties"]["Environment"]["Variables"]["EC2PASS_REPLY_ORIGINS"] = {"Ref": "ReplyOrigins"}

    def issuer_keeps_reply_urls_only_for_mattermost(t):
        t["Resources"]["IssuerFunction"]["Properties"]["Environment"]["Variables"]["EC2PASS_REPLY_ORIGINS"] = {
            "Fn::If": ["HasMattermost", {"Ref": "MattermostOrigin"}, {"Ref": "ReplyOrigins"}]}

    def mattermost_command_url_without_its_path(t):
        t["Outputs"]["MattermostCommandUrl"]["Value"] = {"Fn::GetAtt": ["IssuerFunctionUrl", "FunctionUrl"]}

    # Slack bot direct messages.
    def bot_access(t):
        return t["Resources"]["FollowupBotTokenAccess"]["Properties"]["PolicyDocument"]["Statement"]

    def bot_messages_by_default(t):
        t["Parameters"]["SlackBotDirectMessages"]["Default"] = "Enabled"

    def bot_token_readable_by_the_issuer(t):
        st = t["Resources"]["SlackBotTokenPolicy"]["Properties"]["ResourcePolicy"]["Statement"][0]
        st["Condition"]["ArnNotEquals"]["aws:PrincipalArn"].append({"Fn::GetAtt": ["IssuerRole", "Arn"]})

    def bot_token_readable_by_anyone(t):
        rp = t["Resources"]["SlackBotTokenPolicy"]["Properties"]["ResourcePolicy"]["Statement"]
        rp[:] = [s for s in rp if s["Sid"] != "OnlyTheFollowupAndTheAdminRead"]

    def bot_token_under_the_signing_key(t):
        t["Resources"]["SlackBotToken"]["Properties"]["KmsKeyId"] = {"Ref": "SigningSecretKey"}

    def bot_token_value_in_the_template(t):
        t["Resources"]["SlackBotToken"]["Properties"]["SecretString"] = "xoxb-0000000000-0000000000000-abcdefghijklmnopqrstuvwx"

    def bot_key_lets_the_issuer_decrypt(t):
        st = next(s for s in t["Resources"]["SlackBotTokenKey"]["Properties"]["KeyPolicy"]["Statement"] if s["Sid"] == "FollowupDecryptsThroughSecretsManager")
        st["Principal"]["AWS"] = [st["Principal"]["AWS"], {"Fn::GetAtt": ["IssuerRole", "Arn"]}]

    def bot_key_decrypts_outside_secrets_manager(t):
        st = next(s for s in t["Resources"]["SlackBotTokenKey"]["Properties"]["KeyPolicy"]["Statement"] if s["Sid"] == "FollowupDecryptsThroughSecretsManager")
        st.pop("Condition")

    def bot_key_lets_the_account_decrypt(t):
        st = next(s for s in t["Resources"]["SlackBotTokenKey"]["Properties"]["KeyPolicy"]["Statement"] if s["Sid"] == "AccountAdministersButCannotDecrypt")
        st["Action"] = "kms:*"

    def followup_reads_every_secret(t):
        next(s for s in bot_access(t) if s["Sid"] == "ReadTheBotToken")["Resource"] = "*"

    def followup_decrypts_the_bot_key_directly(t):
        next(s for s in bot_access(t) if s["Sid"] == "DecryptItThroughSecretsManager").pop("Condition")

    def issuer_reads_the_bot_token(t):
        st = t["Resources"]["IssuerSecretAccess"]["Properties"]["PolicyDocument"]["Statement"][0]
        st["Resource"].append({"Fn::If": ["SendsSlackDirectMessages", {"Ref": "SlackBotToken"}, {"Ref": "AWS::NoValue"}]})

    def bot_token_always_passed(t):
        t["Resources"]["FollowupFunction"]["Properties"]["Environment"]["Variables"]["EC2PASS_SLACK_BOT_TOKEN_SECRET_ARN"] = {"Ref": "SigningSecret"}

    def bot_token_unnamed(t):
        t["Resources"]["SlackBotToken"]["Properties"].pop("Name")

    def bot_token_sent_elsewhere(t):
        t["Resources"]["FollowupFunction"]["Properties"]["Environment"]["Variables"]["EC2PASS_SLACK_API"] = {"Ref": "ReplyOrigins"}

    # The reply key: the reply URLs are stored sealed with it.
    def reply_key(t):
        return t["Resources"]["ReplyKey"]["Properties"]

    def reply_key_policy(t):
        return t["Resources"]["ReplyKeyPolicy"]["Properties"]["ResourcePolicy"]["Statement"]

    def reply_key_key_statement(t, sid):
        return next(s for s in t["Resources"]["ReplyKeyKey"]["Properties"]["KeyPolicy"]["Statement"] if s["Sid"] == sid)

    def reply_key_access(t, logical, sid):
        return next(s for s in t["Resources"][logical]["Properties"]["PolicyDocument"]["Statement"] if s["Sid"] == sid)

    def reply_key_with_a_placeholder(t):
        reply_key(t).pop("GenerateSecretString")
        reply_key(t)["SecretString"] = "REPLACE-WITH-A-REPLY-KEY"

    def reply_key_in_the_template(t):
        reply_key(t).pop("GenerateSecretString")
        reply_key(t)["SecretString"] = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"

    def reply_key_too_short(t):
        reply_key(t)["GenerateSecretString"]["PasswordLength"] = 16

    def reply_key_with_punctuation(t):
        reply_key(t)["GenerateSecretString"]["ExcludePunctuation"] = False

    def reply_key_in_a_json_template(t):
        reply_key(t)["GenerateSecretString"].update({"SecretStringTemplate": '{"v": 1}', "GenerateStringKey": "key"})

    def reply_key_under_the_default_key(t):
        reply_key(t).pop("KmsKeyId")

    def reply_key_under_the_signing_key(t):
        reply_key(t)["KmsKeyId"] = {"Ref": "SigningSecretKey"}

    def reply_key_unnamed(t):
        reply_key(t).pop("Name")

    def reply_key_only_with_bot_messages(t):
        for logical in ("ReplyKey", "ReplyKeyPolicy"):
            t["Resources"][logical]["Condition"] = "SendsSlackDirectMessages"

    def reply_key_rotated(t):
        t["Resources"]["ReplyKeyRotation"] = {"Type": "AWS::SecretsManager::RotationSchedule", "Properties": {
            "SecretId": {"Ref": "ReplyKey"}, "RotateImmediatelyOnUpdate": False,
            "HostedRotationLambda": {"RotationType": "PostgreSQLSingleUser"}, "RotationRules": {"ScheduleExpression": "rate(30 days)"}}}

    def reply_key_readable_by_the_guard(t):
        reply_key_policy(t)[0]["Condition"]["ArnNotEquals"]["aws:PrincipalArn"].append({"Fn::GetAtt": ["GuardRole", "Arn"]})

    def reply_key_not_readable_by_the_followup(t):
        reply_key_policy(t)[0]["Condition"]["ArnNotEquals"]["aws:PrincipalArn"].pop(1)

    def reply_key_readable_by_anyone(t):
        rp = reply_key_policy(t)
        rp[:] = [s for s in rp if s["Sid"] != "OnlyTheIssuerTheFollowupAndTheAdminRead"]

    def reply_key_replaceable_by_anyone(t):
        next(s for s in reply_key_policy(t) if s["Sid"] == "OnlyTheAdminChangesIt")["Action"].remove("secretsmanager:PutSecretValue")

    def reply_key_rotatable_by_anyone(t):
        next(s for s in reply_key_policy(t) if s["Sid"] == "OnlyTheAdminChangesIt")["Action"].remove("secretsmanager:RotateSecret")

    def reply_key_without_its_policy(t):
        t["Resources"].pop("ReplyKeyPolicy")

    def reply_key_key_lets_the_guard_decrypt(t):
        st = reply_key_key_statement(t, "FollowupDecryptsThroughSecretsManager")
        st["Principal"]["AWS"] = [st["Principal"]["AWS"], {"Fn::GetAtt": ["GuardRole", "Arn"]}]

    def reply_key_key_decrypts_outside_secrets_manager(t):
        reply_key_key_statement(t, "IssuerDecryptsThroughSecretsManager").pop("Condition")

    def reply_key_key_lets_the_account_decrypt(t):
        reply_key_key_statement(t, "AccountAdministersButCannotDecrypt")["Action"] = "kms:*"

    def reply_key_key_forgets_the_followup(t):
        sts = t["Resources"]["ReplyKeyKey"]["Properties"]["KeyPolicy"]["Statement"]
        sts[:] = [s for s in sts if s["Sid"] != "FollowupDecryptsThroughSecretsManager"]

    def reply_key_key_locks_out_the_admin(t):
        sts = t["Resources"]["ReplyKeyKey"]["Properties"]["KeyPolicy"]["Statement"]
        sts[:] = [s for s in sts if s["Sid"] != "AdminManagesTheKey"]

    def reply_key_key_alias_renamed(t):
        # The SCP's OnlyTheIssuerTheFollowupAndTheAdminDecrypt finds the key by alias/ec2pass-*reply-key.
        t["Resources"]["ReplyKeyKeyAlias"]["Properties"]["AliasName"] = {"Fn::Sub": "alias/${AWS::StackName}-replies"}

    def reply_key_key_without_an_alias(t):
        t["Resources"].pop("ReplyKeyKeyAlias")

    def issuer_cannot_read_the_reply_key(t):
        t["Resources"].pop("IssuerReplyKeyAccess")
        t["Resources"]["IssuerFunction"]["DependsOn"] = ["IssuerSecretAccess"]

    def followup_cannot_read_the_reply_key(t):
        t["Resources"].pop("FollowupReplyKeyAccess")
        t["Resources"]["FollowupFunction"].pop("DependsOn")

    def followup_cannot_decrypt_the_reply_key(t):
        sts = t["Resources"]["FollowupReplyKeyAccess"]["Properties"]["PolicyDocument"]["Statement"]
        sts[:] = [s for s in sts if s["Sid"] != "DecryptItThroughSecretsManager"]

    def followup_decrypts_the_reply_key_directly(t):
        reply_key_access(t, "FollowupReplyKeyAccess", "DecryptItThroughSecretsManager").pop("Condition")

    def issuer_decrypts_the_reply_key_directly(t):
        reply_key_access(t, "IssuerReplyKeyAccess", "DecryptItThroughSecretsManager").pop("Condition")

    def followup_reads_every_secret_for_the_reply_key(t):
        reply_key_access(t, "FollowupReplyKeyAccess", "ReadTheReplyKey")["Resource"] = {
            "Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${AWS::StackName}-*"}

    def followup_decrypts_with_the_signing_key(t):
        reply_key_access(t, "FollowupReplyKeyAccess", "DecryptItThroughSecretsManager")["Resource"] = {"Fn::GetAtt": ["SigningSecretKey", "Arn"]}

    def issuer_reads_the_reply_key_only_with_mattermost(t):
        t["Resources"]["IssuerReplyKeyAccess"]["Condition"] = "HasMattermost"

    def guard_reads_the_reply_key(t):
        t["Resources"]["GuardRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"].append({"Sid": "Peek", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": {"Ref": "ReplyKey"}})

    def guard_decrypts_with_the_reply_key_key(t):
        t["Resources"]["GuardRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"].append({"Sid": "Peek", "Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": {"Fn::GetAtt": ["ReplyKeyKey", "Arn"]},
                                    "Condition": {"StringEquals": {"kms:ViaService": {"Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}}}})

    def reply_key_not_passed_to_the_issuer(t):
        t["Resources"]["IssuerFunction"]["Properties"]["Environment"]["Variables"].pop("EC2PASS_REPLY_KEY_SECRET_ARN")

    def reply_key_not_passed_to_the_followup(t):
        t["Resources"]["FollowupFunction"]["Properties"]["Environment"]["Variables"].pop("EC2PASS_REPLY_KEY_SECRET_ARN")

    def reply_key_passed_as_the_signing_secret(t):
        t["Resources"]["FollowupFunction"]["Properties"]["Environment"]["Variables"]["EC2PASS_REPLY_KEY_SECRET_ARN"] = {"Ref": "SigningSecret"}

    def reply_key_passed_only_with_bot_messages(t):
        t["Resources"]["FollowupFunction"]["Properties"]["Environment"]["Variables"]["EC2PASS_REPLY_KEY_SECRET_ARN"] = {
            "Fn::If": ["SendsSlackDirectMessages", {"Ref": "ReplyKey"}, ""]}

    def reply_key_passed_to_the_guard(t):
        t["Resources"]["GuardFunction"]["Properties"]["Environment"]["Variables"]["EC2PASS_REPLY_KEY_SECRET_ARN"] = {"Ref": "ReplyKey"}

    def followup_starts_before_it_may_read_the_reply_key(t):
        t["Resources"]["FollowupFunction"].pop("DependsOn")

    # Attribution and response (issue 14).
    def attribution(t):
        return t["Resources"]["AttributionFunction"]["Properties"]

    def attribution_env(t):
        return attribution(t)["Environment"]["Variables"]

    def attribution_statement(t, sid):
        return next(st for st in role_statements(t, "AttributionRole") if st.get("Sid") == sid)

    def response_deny(t):
        return attribution_statement(t, "NeverTheAdminOrEc2passOrAService")["Resource"]

    def guard_may_put_role_policies(t):
        t["Resources"]["GuardRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"].append(
            {"Sid": "Respond", "Effect": "Allow", "Action": ["iam:PutRolePolicy"], "Resource": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/*"}})

    def response_on_by_default(t):
        t["Parameters"]["Response"]["Default"] = "on"

    def response_outside_its_condition(t):
        pols = t["Resources"]["AttributionRole"]["Properties"]["Policies"]
        i = next(i for i, x in enumerate(pols) if "Fn::If" in x and x["Fn::If"][0] == "RespondsToCallers")
        pols[i] = pols[i]["Fn::If"][1]

    def response_deny_misses_the_admin(t):
        response_deny(t).pop(0)

    def response_deny_misses_the_stacks_roles(t):
        response_deny(t).remove({"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/${AWS::StackName}-*"})

    def response_deny_misses_the_lookup_role(t):
        response_deny(t).remove({"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/${LookupRoleName}"})

    def response_deny_misses_service_linked_roles(t):
        response_deny(t).remove({"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/aws-service-role/*"})

    def response_in_every_account(t):
        attribution_statement(t, "DeactivateACallersKey")["Resource"] = {"Fn::Sub": "arn:${AWS::Partition}:iam::*:user/*"}

    def response_may_attach_policies(t):
        attribution_statement(t, "RevokeACallersSessions")["Action"].append("iam:AttachRolePolicy")

    def attribution_reads_the_table(t):
        attribution_statement(t, "KeepCallsByInstance")["Action"].append("dynamodb:GetItem")

    def attribution_puts_any_item(t):
        attribution_statement(t, "KeepCallsByInstance")["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"] = ["*"]

    def attribution_leading_keys_without_null(t):
        attribution_statement(t, "RecordTheCallerWithTheVerdict")["Condition"].pop("Null")

    def attribution_queries_every_index(t):
        attribution_statement(t, "StartsOfAnInstance")["Resource"] = {"Fn::Sub": "${Table.Arn}/index/*"}

    def attribution_takes_state_changes(t):
        attribution_statement(t, "TakeCallsFromTheQueue")["Resource"] = {"Fn::GetAtt": ["StateChangeQueue", "Arn"]}

    def attribution_uses_the_alert_key_directly(t):
        attribution_statement(t, "AlertEncryption").pop("Condition")

    def attribution_describes_in_a_hub(t):
        pols = t["Resources"]["AttributionRole"]["Properties"]["Policies"]
        i = next(i for i, x in enumerate(pols) if "Fn::If" in x and x["Fn::If"][2] != {"Ref": "AWS::NoValue"} and x["Fn::If"][0] == "IsHub")
        pols[i] = pols[i]["Fn::If"][2]

    def attribution_assumes_the_member_role(t):
        attribution_statement(t, "AssumeTheLookupRoles")["Resource"] = {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/${MemberRoleName}"}

    def attribution_assumes_roles_outside_the_organization(t):
        attribution_statement(t, "AssumeTheLookupRoles").pop("Condition")

    def attribution_hub_role_from_the_member_role(t):
        attribution_env(t)["EC2PASS_MEMBER_ROLE"] = {"Fn::If": ["IsHub", {"Ref": "MemberRoleName"}, ""]}

    def attribution_built_from_the_guard_binary(t):
        t["Resources"]["AttributionFunction"]["Metadata"]["BuildProperties"]["Binary"] = "guard"

    def attribution_on_the_guard_role(t):
        attribution(t)["Role"] = {"Fn::GetAtt": ["GuardRole", "Arn"]}

    def attribution_without_partial_batch_responses(t):
        attribution(t)["Events"]["Calls"]["Properties"].pop("FunctionResponseTypes")

    def attribution_pollers_beyond_its_reservation(t):
        attribution(t)["Events"]["Calls"]["Properties"]["ScalingConfig"]["MaximumConcurrency"] = 5

    def attribution_hands_back_to_the_guards_queue(t):
        attribution_env(t)["EC2PASS_CALL_QUEUE_URL"] = {"Ref": "StateChangeQueue"}

    def attribution_response_always_on(t):
        attribution_env(t)["EC2PASS_RESPONSE"] = "on"

    def attribution_admin_fixed(t):
        attribution_env(t)["EC2PASS_ADMIN_ARN"] = {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/ec2pass-admin"}

    def attribution_own_roles_miss_the_lookup_role(t):
        attribution_env(t)["EC2PASS_OWN_ROLES"] = {"Fn::Sub": "${AWS::StackName}-*,${MemberRoleName},ec2pass*"}

    def call_rule_hears_every_ec2_call(t):
        t["Resources"]["CallRule"]["Properties"]["EventPattern"]["detail"].pop("eventName")

    def call_rule_hears_terminations_too(t):
        t["Resources"]["CallRule"]["Properties"]["EventPattern"]["detail"]["eventName"].append("TerminateInstances")

    def call_rule_hears_another_service(t):
        t["Resources"]["CallRule"]["Properties"]["EventPattern"]["detail"]["eventSource"] = [{"prefix": ""}]

    def call_rule_without_a_dlq(t):
        t["Resources"]["CallRule"]["Properties"]["Targets"][0].pop("DeadLetterConfig")

    def hub_call_rule_in_every_stack(t):
        t["Resources"]["HubCallRule"].pop("Condition")

    def hub_call_rule_on_the_default_bus(t):
        t["Resources"]["HubCallRule"]["Properties"].pop("EventBusName")

    def call_queue_gives_up_early(t):
        t["Resources"]["CallQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"] = 10

    def call_queue_visibility_shorter_than_six_timeouts(t):
        t["Resources"]["CallQueue"]["Properties"]["VisibilityTimeout"] = 60

    def call_queue_open_to_all_senders(t):
        st = t["Resources"]["CallQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
        st[:] = [x for x in st if x.get("Sid") != "NobodyElseSends"]

    def call_queue_refuses_the_hub_rule(t):
        st = next(x for x in t["Resources"]["CallQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"] if x.get("Sid") == "NobodyElseSends")
        st["Condition"]["ArnNotEquals"]["aws:SourceArn"] = [{"Fn::GetAtt": ["CallRule", "Arn"]}]

    def call_queue_drainable_by_anyone(t):
        st = t["Resources"]["CallQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
        st[:] = [x for x in st if x.get("Sid") != "OnlyTheAttributionTakesThem"]

    def forget_the_call_failures_alarm(t):
        t["Resources"].pop("CallFailuresAlarm")

    def trail_by_default(t):
        t["Parameters"]["CreateTrail"]["Default"] = "true"

    def trail_in_one_region(t):
        t["Resources"]["Trail"]["Properties"]["IsMultiRegionTrail"] = False

    def trail_bucket_public(t):
        t["Resources"]["TrailBucket"]["Properties"].pop("PublicAccessBlockConfiguration")

    def trail_bucket_over_plain_http(t):
        st = t["Resources"]["TrailBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
        st[:] = [x for x in st if x.get("Sid") != "TlsOnly"]

    def trail_bucket_for_any_trail(t):
        st = next(x for x in t["Resources"]["TrailBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"] if x.get("Sid") == "CloudTrailWrites")
        st["Condition"]["StringEquals"].pop("aws:SourceArn")

    def allow_list_accepted_without_response(t):
        t["Rules"].pop("ResponseAllowListNeedsResponse")

    def forget_the_call_failures_output(t):
        t["Outputs"].pop("CallFailureQueueArn")

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
                    rule_without_a_dlq, rule_retries_for_a_day, guard_forgets_its_queue,
                    guard_assumes_roles_outside_the_organization, guard_assumes_any_role, issuer_assumes_the_member_role,
                    issuer_assumes_roles_outside_the_organization, guard_assumes_roles_without_an_organization,
                    hub_bus_open_to_every_account, hub_bus_open_to_the_organization_of_the_caller,
                    hub_bus_lets_the_organization_manage_rules, hub_bus_in_every_stack, hub_bus_renamed, hub_rule_misses_running,
                    hub_rule_on_the_default_bus, hub_rule_invokes_the_guard, hub_rule_retries_too_long, hub_rule_without_a_dlq,
                    queue_refuses_the_hub_rule, queue_deny_refuses_the_hub_rule, failures_refuse_the_hub_rule,
                    forget_the_hub_rule_failures_alarm, hub_rule_alarm_without_its_bus, member_role_always_set,
                    accounts_from_the_wrong_parameter, forget_the_lookup_role, hub_by_default, member_role_renamed_by_default,
                    hub_settings_accepted_without_an_organization, forget_the_hub_bus_output,
                    guard_may_list_every_organizations_action, guard_may_describe_the_organization,
                    issuer_reads_organization_without_units, organization_read_by_every_hub, org_units_not_passed_to_the_guard,
                    org_units_passed_without_an_organization, org_units_accepted_without_an_organization,
                    hub_with_units_still_needs_member_accounts, org_units_with_spaces,
                    followup_may_describe_instances, followup_may_publish, followup_reads_secrets, followup_queries_the_whole_table,
                    followup_changes_passwords, followup_reads_verdicts, followup_leading_keys_without_null,
                    followup_takes_from_every_queue, followup_built_from_the_issuer_binary, followup_queue_open_to_anyone,
                    followup_queue_admits_any_sender, followup_queue_refuses_the_topic, followup_queue_drainable_by_anyone,
                    followup_without_dlq, followup_without_the_failures_alarm, followup_subscription_without_filter,
                    followup_subscription_hears_everything_but_summaries, followup_subscription_raw, followup_without_the_schedule,
                    followup_esm_without_partial_batch_responses, issuer_reads_reply_items, issuer_cannot_put_the_reply,
                    reply_origins_not_from_the_parameter, reply_origins_take_any_scheme, table_without_the_replies_index,
                    table_without_the_by_instance_index, by_instance_index_keys_only, by_instance_index_by_launch_time,
                    issuer_queries_every_index, issuer_queries_the_table, issuer_queries_the_alerts_due, issuer_scans_by_instance,
                    issuer_cannot_tell_the_status, guard_queries_by_instance,
                    channel_alerts_by_default, channel_topic_unencrypted, channel_topic_under_the_aws_managed_key, channel_topic_unnamed,
                    channel_topic_in_every_stack, followup_publishes_anywhere, followup_publishes_to_the_alert_topic,
                    followup_uses_the_alert_key_directly, followup_publishes_without_channel_alerts, channel_topic_open_to_every_publisher,
                    channel_topic_policy_lets_the_issuer_publish, chat_topic_always_passed, chat_topic_never_passed,
                    chatbot_without_the_deny_all_guardrail, chatbot_guardrail_read_only, chatbot_lets_members_pick_their_roles,
                    chatbot_hears_the_alert_topic, channel_role_reads_everything, channel_role_with_an_inline_policy,
                    channel_role_trusts_lambda, chatbot_channel_without_its_ids, chatbot_ids_accepted_without_channel_alerts,
                    chatbot_workspace_accepted_alone, forget_the_channel_topic_output,
                    mattermost_origin_takes_any_url, mattermost_origin_takes_http, mattermost_token_under_the_default_key,
                    mattermost_token_value_in_the_template, mattermost_token_readable_by_the_guard, mattermost_token_without_its_policy,
                    mattermost_token_in_every_stack, mattermost_token_always_passed, issuer_cannot_read_the_mattermost_token,
                    issuer_reads_every_secret, followup_posts_to_no_mattermost, issuer_keeps_reply_urls_only_for_mattermost,
                    mattermost_command_url_without_its_path,
                    bot_messages_by_default, bot_token_readable_by_the_issuer, bot_token_readable_by_anyone, bot_token_under_the_signing_key,
                    bot_token_value_in_the_template, bot_key_lets_the_issuer_decrypt, bot_key_decrypts_outside_secrets_manager,
                    bot_key_lets_the_account_decrypt, followup_reads_every_secret, followup_decrypts_the_bot_key_directly,
                    issuer_reads_the_bot_token, bot_token_always_passed, bot_token_unnamed, bot_token_sent_elsewhere,
                    reply_key_with_a_placeholder, reply_key_in_the_template, reply_key_too_short, reply_key_with_punctuation,
                    reply_key_in_a_json_template, reply_key_under_the_default_key, reply_key_under_the_signing_key, reply_key_unnamed,
                    reply_key_only_with_bot_messages, reply_key_rotated, reply_key_readable_by_the_guard,
                    reply_key_not_readable_by_the_followup, reply_key_readable_by_anyone, reply_key_replaceable_by_anyone,
                    reply_key_rotatable_by_anyone, reply_key_without_its_policy, reply_key_key_lets_the_guard_decrypt,
                    reply_key_key_decrypts_outside_secrets_manager, reply_key_key_lets_the_account_decrypt,
                    reply_key_key_forgets_the_followup, reply_key_key_locks_out_the_admin, reply_key_key_alias_renamed,
                    reply_key_key_without_an_alias, issuer_cannot_read_the_reply_key, followup_cannot_read_the_reply_key,
                    followup_cannot_decrypt_the_reply_key, followup_decrypts_the_reply_key_directly,
                    issuer_decrypts_the_reply_key_directly, followup_reads_every_secret_for_the_reply_key,
                    followup_decrypts_with_the_signing_key, issuer_reads_the_reply_key_only_with_mattermost,
                    guard_reads_the_reply_key, guard_decrypts_with_the_reply_key_key, reply_key_not_passed_to_the_issuer,
                    reply_key_not_passed_to_the_followup, reply_key_passed_as_the_signing_secret,
                    reply_key_passed_only_with_bot_messages, reply_key_passed_to_the_guard,
                    followup_starts_before_it_may_read_the_reply_key,
                    guard_may_put_role_policies, response_on_by_default, response_outside_its_condition,
                    response_deny_misses_the_admin, response_deny_misses_the_stacks_roles, response_deny_misses_the_lookup_role,
                    response_deny_misses_service_linked_roles, response_in_every_account, response_may_attach_policies,
                    attribution_reads_the_table, attribution_puts_any_item, attribution_leading_keys_without_null,
                    attribution_queries_every_index, attribution_takes_state_changes, attribution_uses_the_alert_key_directly,
                    attribution_describes_in_a_hub, attribution_assumes_the_member_role, attribution_assumes_roles_outside_the_organization,
                    attribution_hub_role_from_the_member_role, attribution_built_from_the_guard_binary, attribution_on_the_guard_role,
                    attribution_without_partial_batch_responses, attribution_pollers_beyond_its_reservation,
                    attribution_hands_back_to_the_guards_queue, attribution_response_always_on, attribution_admin_fixed,
                    attribution_own_roles_miss_the_lookup_role, call_rule_hears_every_ec2_call, call_rule_hears_terminations_too,
                    call_rule_hears_another_service, call_rule_without_a_dlq, hub_call_rule_in_every_stack,
                    hub_call_rule_on_the_default_bus, call_queue_gives_up_early, call_queue_visibility_shorter_than_six_timeouts,
                    call_queue_open_to_all_senders, call_queue_refuses_the_hub_rule, call_queue_drainable_by_anyone,
                    forget_the_call_failures_alarm, trail_by_default, trail_in_one_region, trail_bucket_public,
                    trail_bucket_over_plain_http, trail_bucket_for_any_trail, allow_list_accepted_without_response,
                    forget_the_call_failures_output):
        broken = copy.deepcopy(template)
        breaker(broken)
        yield breaker.__name__, broken


def broken_members(member):
    """Deliberately broken spokes (infra/member.yaml), each of which the checks must catch."""

    def role(t, logical):
        return t["Resources"][logical]["Properties"]

    def statement(t, logical, sid):
        return next(st for pol in role(t, logical)["Policies"] for st in
                    (pol["Fn::If"][1] if "Fn::If" in pol else pol)["PolicyDocument"]["Statement"] if st.get("Sid") == sid)

    def trust(t, logical):
        return role(t, logical)["AssumeRolePolicyDocument"]["Statement"][0]

    # (a) the member role widened
    def member_role_may_do_all_of_ec2(t):
        statement(t, "MemberRole", "Describe")["Action"] = ["ec2:*"]

    def member_role_deletes_any_tag(t):
        statement(t, "MemberRole", "RemoveOnlyTheAuthTag").pop("Condition")

    def member_role_deletes_every_tag(t):
        statement(t, "MemberRole", "RemoveOnlyTheAuthTag")["Condition"].pop("Null")

    def member_role_may_tag(t):
        statement(t, "MemberRole", "Stop")["Action"].append("ec2:CreateTags")

    def member_role_terminates_when_alert_only(t):
        pols = role(t, "MemberRole")["Policies"]
        i = next(i for i, x in enumerate(pols) if "Fn::If" in x and x["Fn::If"][0] == "Terminates")
        pols[i] = pols[i]["Fn::If"][1]

    def member_role_stops_in_other_accounts(t):
        statement(t, "MemberRole", "Stop")["Resource"] = {"Fn::Sub": "arn:${AWS::Partition}:ec2:*:*:instance/*"}

    def member_role_gets_a_managed_policy(t):
        role(t, "MemberRole")["ManagedPolicyArns"] = [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/ReadOnlyAccess"}]

    # (b) the member role's trust
    def member_role_trusts_anyone(t):
        trust(t, "MemberRole")["Principal"] = {"AWS": "*"}

    def member_role_trusts_the_hub_account(t):
        trust(t, "MemberRole")["Principal"] = {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${HubAccountId}:root"}}

    def member_role_trusts_the_issuer(t):
        trust(t, "MemberRole")["Principal"] = {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${HubAccountId}:role/${HubStackName}-issuer"}}

    def member_role_trusts_any_role_of_the_organization(t):
        trust(t, "MemberRole")["Principal"] = "*"

    def member_role_trusts_a_hub_outside_the_organization(t):
        trust(t, "MemberRole").pop("Condition")

    def member_role_in_every_region(t):
        t["Resources"]["MemberRole"].pop("Condition")

    # (c) the lookup role
    def lookup_role_may_stop(t):
        statement(t, "LookupRole", "ShowInstance")["Action"].append("ec2:StopInstances")

    def lookup_role_reads_everything(t):
        statement(t, "LookupRole", "ShowInstance")["Action"] = ["ec2:Describe*"]

    def lookup_role_trusts_the_guard(t):
        trust(t, "LookupRole")["Principal"] = {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${HubAccountId}:role/${HubStackName}-guard"}}

    def lookup_role_trusts_the_hub_account(t):
        trust(t, "LookupRole")["Principal"] = {"AWS": {"Ref": "HubAccountId"}}

    # (e) the forwarding rule and its role
    def forward_rule_targets_another_bus(t):
        t["Resources"]["ForwardRule"]["Properties"]["Targets"][0]["Arn"] = {
            "Fn::Sub": "arn:${AWS::Partition}:events:${HubRegion}:${HubAccountId}:event-bus/default"}

    def forward_rule_targets_this_region(t):
        t["Resources"]["ForwardRule"]["Properties"]["Targets"][0]["Arn"] = {
            "Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${HubAccountId}:event-bus/${HubEventBusName}"}

    def forward_rule_misses_pending(t):
        t["Resources"]["ForwardRule"]["Properties"]["EventPattern"]["detail"]["state"] = ["running"]

    def forward_rule_misses_running(t):
        t["Resources"]["ForwardRule"]["Properties"]["EventPattern"]["detail"]["state"] = ["pending", "stopping"]

    def forward_rule_only_for_some_instances(t):
        t["Resources"]["ForwardRule"]["Properties"]["EventPattern"]["detail"]["instance-id"] = [{"prefix": "i-0"}]

    def forward_rule_without_a_role(t):
        t["Resources"]["ForwardRule"]["Properties"]["Targets"][0].pop("RoleArn")

    def forward_rule_disabled(t):
        t["Resources"]["ForwardRule"]["Properties"]["State"] = "DISABLED"

    def forward_rule_renamed(t):
        t["Resources"]["ForwardRule"]["Properties"]["Name"] = "forward-ec2-starts"

    def forward_rule_retries_for_a_day(t):
        t["Resources"]["ForwardRule"]["Properties"]["Targets"][0]["RetryPolicy"]["MaximumEventAgeInSeconds"] = 86400

    def forward_rule_only_in_the_hub_region(t):
        t["Resources"]["ForwardRule"]["Condition"] = "InHubRegion"

    def forward_role_puts_events_anywhere(t):
        statement(t, "ForwardRole", "PutOnTheHubBusOnly")["Resource"] = "*"

    def forward_role_trusts_any_account(t):
        trust(t, "ForwardRole").pop("Condition")

    def forward_role_named_once(t):
        role(t, "ForwardRole")["RoleName"] = {"Fn::Sub": "${MemberRoleName}-forward"}

    # the spoke's settings
    def spoke_alert_only_by_default(t):
        t["Parameters"]["UnstoppableAction"]["Default"] = "alert-only"

    def spoke_with_a_transform(t):
        t["Transform"] = "AWS::Serverless-2016-10-31"

    def spoke_misspells_a_property(t):
        role(t, "ForwardRole")["AssumeRolePolicyDocuments"] = role(t, "ForwardRole").pop("AssumeRolePolicyDocument")

    # (f) the calls' forwarding (issue 14)
    def lookup_role_forgets_the_attribution(t):
        trust(t, "LookupRole")["Principal"] = {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${HubAccountId}:role/${HubStackName}-issuer"}}

    def member_role_trusts_the_attribution(t):
        trust(t, "MemberRole")["Principal"] = {"AWS": [trust(t, "MemberRole")["Principal"]["AWS"],
                                                      {"Fn::Sub": "arn:${AWS::Partition}:iam::${HubAccountId}:role/${HubStackName}-attribution"}]}

    def forward_calls_rule_missing(t):
        t["Resources"].pop("ForwardCallsRule")

    def forward_calls_rule_hears_only_launches(t):
        t["Resources"]["ForwardCallsRule"]["Properties"]["EventPattern"]["detail"]["eventName"] = ["RunInstances"]

    def forward_calls_rule_targets_another_bus(t):
        t["Resources"]["ForwardCallsRule"]["Properties"]["Targets"][0]["Arn"] = {
            "Fn::Sub": "arn:${AWS::Partition}:events:${HubRegion}:${HubAccountId}:event-bus/default"}

    def forward_calls_rule_without_a_role(t):
        t["Resources"]["ForwardCallsRule"]["Properties"]["Targets"][0].pop("RoleArn")

    def forward_calls_rule_renamed(t):
        t["Resources"]["ForwardCallsRule"]["Properties"]["Name"] = "forward-ec2-calls"

    for breaker in (lookup_role_forgets_the_attribution, member_role_trusts_the_attribution, forward_calls_rule_missing,
                    forward_calls_rule_hears_only_launches, forward_calls_rule_targets_another_bus, forward_calls_rule_without_a_role,
                    forward_calls_rule_renamed,
                    member_role_may_do_all_of_ec2, member_role_deletes_any_tag, member_role_deletes_every_tag, member_role_may_tag,
                    member_role_terminates_when_alert_only, member_role_stops_in_other_accounts, member_role_gets_a_managed_policy,
                    member_role_trusts_anyone, member_role_trusts_the_hub_account, member_role_trusts_the_issuer,
                    member_role_trusts_any_role_of_the_organization, member_role_trusts_a_hub_outside_the_organization,
                    member_role_in_every_region, lookup_role_may_stop, lookup_role_reads_everything, lookup_role_trusts_the_guard,
                    lookup_role_trusts_the_hub_account, forward_rule_targets_another_bus, forward_rule_targets_this_region,
                    forward_rule_misses_pending, forward_rule_misses_running, forward_rule_only_for_some_instances,
                    forward_rule_without_a_role, forward_rule_disabled, forward_rule_renamed, forward_rule_retries_for_a_day,
                    forward_rule_only_in_the_hub_region, forward_role_puts_events_anywhere, forward_role_trusts_any_account,
                    forward_role_named_once, spoke_alert_only_by_default, spoke_with_a_transform, spoke_misspells_a_property):
        broken = copy.deepcopy(member)
        breaker(broken)
        yield breaker.__name__, broken


def broken_organizations(org):
    """Deliberately broken StackSets (infra/organization.yaml), each of which the checks must catch."""

    def stack_set(t):
        return t["Resources"]["Spokes"]["Properties"]

    # (f)
    def stack_set_self_managed(t):
        stack_set(t)["PermissionModel"] = "SELF_MANAGED"

    def stack_set_without_auto_deployment(t):
        stack_set(t)["AutoDeployment"]["Enabled"] = False

    def stack_set_forgets_auto_deployment(t):
        stack_set(t).pop("AutoDeployment")

    def stack_set_keeps_stacks_of_leavers(t):
        stack_set(t)["AutoDeployment"]["RetainStacksOnAccountRemoval"] = True

    def stack_set_to_a_list_of_accounts(t):
        stack_set(t)["StackInstancesGroup"][0]["DeploymentTargets"] = {"Accounts": ["210987654321"]}

    def stack_set_in_one_region(t):
        stack_set(t)["StackInstancesGroup"][0]["Regions"] = [{"Ref": "HubRegion"}]

    def stack_set_without_named_iam(t):
        stack_set(t)["Capabilities"] = ["CAPABILITY_IAM"]

    def stack_set_forgets_a_parameter(t):
        stack_set(t)["Parameters"] = [x for x in stack_set(t)["Parameters"] if x["ParameterKey"] != "ClearStopProtection"]

    def stack_set_alert_only_by_default(t):
        t["Parameters"]["UnstoppableAction"]["Default"] = "alert-only"

    def stack_set_regions_one_by_one(t):
        stack_set(t)["OperationPreferences"]["RegionConcurrencyType"] = "SEQUENTIAL"

    def stack_set_tolerates_every_failure(t):
        stack_set(t)["OperationPreferences"]["FailureTolerancePercentage"] = 100

    def stack_set_named_unprotected(t):
        stack_set(t)["StackSetName"] = "guard-spokes"

    def stack_set_accepts_a_region_without_roles(t):
        t.pop("Rules")

    def stack_set_misspells_a_property(t):
        stack_set(t)["OperationPreference"] = stack_set(t).pop("OperationPreferences")

    # The delegation policy (a hub reading its accounts from the Organization).
    def delegation(t):
        return t["Resources"]["HubReadsTheOrganization"]

    def delegation_statement(t):
        return delegation(t)["Properties"]["Content"]["Statement"][0]

    def delegation_policy_allows_any_principal(t):
        delegation_statement(t)["Principal"] = "*"

    def delegation_policy_allows_writes(t):
        delegation_statement(t)["Action"].append("organizations:MoveAccount")

    def delegation_policy_allows_everything(t):
        delegation_statement(t)["Action"] = ["organizations:*"]

    def delegation_policy_to_another_account(t):
        delegation_statement(t)["Principal"] = {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}

    def delegation_policy_as_a_string(t):
        delegation(t)["Properties"]["Content"] = json.dumps(delegation(t)["Properties"]["Content"])

    def delegation_policy_forgotten(t):
        t["Resources"].pop("HubReadsTheOrganization")
        t["Outputs"].pop("DelegationPolicyId")

    def delegation_policy_when_the_hub_is_the_management_account(t):
        delegation(t).pop("Condition")
        t["Outputs"]["DelegationPolicyId"].pop("Condition")

    def delegation_policy_from_a_delegated_administrator(t):
        t["Conditions"]["DelegatesToTheHub"]["Fn::And"].pop(0)

    def delegation_policy_replaces_one_merged_by_hand(t):
        t["Conditions"]["DelegatesToTheHub"]["Fn::And"].pop()

    for breaker in (stack_set_self_managed, stack_set_without_auto_deployment, stack_set_forgets_auto_deployment,
                    stack_set_keeps_stacks_of_leavers, stack_set_to_a_list_of_accounts, stack_set_in_one_region,
                    stack_set_without_named_iam, stack_set_forgets_a_parameter, stack_set_alert_only_by_default,
                    stack_set_regions_one_by_one, stack_set_tolerates_every_failure, stack_set_named_unprotected,
                    stack_set_accepts_a_region_without_roles, stack_set_misspells_a_property,
                    delegation_policy_allows_any_principal, delegation_policy_allows_writes, delegation_policy_allows_everything,
                    delegation_policy_to_another_account, delegation_policy_as_a_string, delegation_policy_forgotten,
                    delegation_policy_when_the_hub_is_the_management_account, delegation_policy_from_a_delegated_administrator,
                    delegation_policy_replaces_one_merged_by_hand):
        broken = copy.deepcopy(org)
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

    # Issue 12: the spokes and the hub bus.
    def spoke_roles_scp_misses_the_member_role(p):
        sid(p, "KeepTheSpokeRoles")["Resource"] = ["arn:aws:iam::*:role/ec2pass-lookup", "arn:aws:iam::*:role/ec2pass-admin"]

    def spoke_roles_scp_misses_the_forwarding_roles(p):
        sid(p, "KeepTheSpokeRoles")["Resource"][0] = "arn:aws:iam::*:role/ec2pass-member"

    def spoke_scp_excepts_every_role(p):
        sid(p, "KeepTheForwardRule")["Condition"]["ArnNotLike"]["aws:PrincipalArn"].append("arn:aws:iam::*:role/*")

    def spoke_scp_misses_the_forward_rule(p):
        sid(p, "KeepTheForwardRule")["Resource"] = "arn:aws:events:*:*:rule/ec2pass-forward"

    def spoke_stacks_scp_on_the_wrong_name(p):
        sid(p, "KeepTheSpokeStacks")["Resource"] = "arn:aws:cloudformation:*:*:stack/ec2pass-*"

    def auth_tag_policy_forgets_the_member_role(p):
        for st in p["protect-auth-tag.json"]["Statement"]:
            st["Condition"]["ArnNotLike"]["aws:PrincipalArn"].remove("arn:aws:iam::*:role/ec2pass-member")

    def bus_policies_scp_on_the_bus(p):
        # PutPermission names no resource: a Deny on the bus's ARN never matches it.
        sid(p, "KeepTheBusPolicies")["Resource"] = "arn:aws:events:*:*:event-bus/ec2pass-*"

    def condition_aws_never_sets(p):
        # DetachInstances carries no instance types: a Deny that needs them never matches.
        sid(p, "NoDetachingFromGroups")["Condition"]["StringLike"] = {"autoscaling:InstanceTypes": "*"}


    # Issue 13, follow-ups: the follow-up role's carve-outs, the chat secrets.
    def scp_followup_writes_the_whole_table(p):
        sid(p, "KeepTheTable")["Condition"]["ArnNotLike"]["aws:PrincipalArn"].append(FOLLOWUP_SCP)

    def scp_followup_carve_out_covers_deletes(p):
        sid(p, "OnlyTheRolesUpdateItems")["Action"].append("dynamodb:DeleteItem")

    def scp_update_carve_out_for_every_role(p):
        sid(p, "OnlyTheRolesUpdateItems")["Condition"]["ArnNotLike"]["aws:PrincipalArn"].append("arn:aws:iam::*:role/*")

    def scp_denies_the_followup_its_updates(p):
        sid(p, "OnlyTheRolesUpdateItems")["Condition"]["ArnNotLike"]["aws:PrincipalArn"].remove(FOLLOWUP_SCP)

    def scp_bot_token_readable_by_the_issuer(p):
        sid(p, "OnlyTheFollowupAndTheAdminRead")["Condition"]["ArnNotLike"]["aws:PrincipalArn"].append(ISSUER_SCP)

    def scp_followup_reads_the_signing_secret(p):
        sid(p, "OnlyTheIssuerAndTheAdminRead")["Condition"]["ArnNotLike"]["aws:PrincipalArn"].append(FOLLOWUP_SCP)

    def scp_issuer_statement_covers_the_bot_token(p):
        sid(p, "OnlyTheIssuerAndTheAdminRead")["Resource"] = "arn:aws:secretsmanager:*:*:secret:ec2pass-*"

    def scp_issuer_statement_misses_the_mattermost_token(p):
        sid(p, "OnlyTheIssuerAndTheAdminRead")["Resource"] = ["arn:aws:secretsmanager:*:*:secret:ec2pass-*slack-signing-secret-*"]

    def scp_bot_key_decryptable_by_the_issuer(p):
        sid(p, "OnlyTheFollowupAndTheAdminDecrypt")["Condition"]["ArnNotLike"]["aws:PrincipalArn"].append(ISSUER_SCP)

    # The reply key.
    def scp_reply_key_readable_by_the_guard(p):
        sid(p, "OnlyTheIssuerTheFollowupAndTheAdminRead")["Condition"]["ArnNotLike"]["aws:PrincipalArn"].append(GUARD_SCP)

    def scp_reply_key_denied_to_the_followup(p):
        sid(p, "OnlyTheIssuerTheFollowupAndTheAdminRead")["Condition"]["ArnNotLike"]["aws:PrincipalArn"].remove(FOLLOWUP_SCP)

    def scp_reply_key_statement_on_another_name(p):
        sid(p, "OnlyTheIssuerTheFollowupAndTheAdminRead")["Resource"] = "arn:aws:secretsmanager:*:*:secret:ec2pass-*reply-url-*"

    def scp_reply_key_decrypt_on_another_alias(p):
        sid(p, "OnlyTheIssuerTheFollowupAndTheAdminDecrypt")["Condition"]["ForAnyValue:StringLike"]["kms:ResourceAliases"] = ["alias/ec2pass-*reply-keys"]

    def scp_reply_key_key_decryptable_by_the_guard(p):
        sid(p, "OnlyTheIssuerTheFollowupAndTheAdminDecrypt")["Condition"]["ArnNotLike"]["aws:PrincipalArn"].append(GUARD_SCP)

    def scp_reply_key_carve_out_by_path(p):
        sid(p, "OnlyTheIssuerTheFollowupAndTheAdminRead")["Condition"]["ArnNotLike"]["aws:PrincipalArn"].append("arn:aws:iam::*:role/ec2pass/*")

    def scp_reply_key_only_in_the_hub_file(p):
        # A statement in protect-hub-scp.json, which a single account does not carry.
        st = sid(p, "OnlyTheIssuerTheFollowupAndTheAdminRead")
        p["protect-secret-and-exemptions-scp.json"]["Statement"].remove(st)
        p["protect-hub-scp.json"]["Statement"].append(st)

    # Attribution and response (issue 14).
    def scp_attribution_may_drop_the_table(p):
        sid(p, "KeepTheTable")["Condition"]["ArnNotLike"]["aws:PrincipalArn"].append(ATTRIBUTION_SCP)

    def scp_denies_the_attribution_its_writes(p):
        sid(p, "OnlyTheRolesPutAndDeleteItems")["Condition"]["ArnNotLike"]["aws:PrincipalArn"].remove(ATTRIBUTION_SCP)

    def scp_put_carve_out_for_the_followup(p):
        sid(p, "OnlyTheRolesPutAndDeleteItems")["Condition"]["ArnNotLike"]["aws:PrincipalArn"].append(FOLLOWUP_SCP)

    def scp_calls_statement_misses_the_call_queue(p):
        sid(p, "OnlyTheAttributionTakesCalls")["Resource"] = "arn:aws:sqs:*:*:ec2pass-*call"

    def scp_calls_taken_by_the_guard(p):
        sid(p, "OnlyTheAttributionTakesCalls")["Condition"]["ArnNotLike"]["aws:PrincipalArn"].append(GUARD_SCP)

    def spoke_scp_misses_the_calls_forward_rule(p):
        sid(p, "KeepTheForwardRule")["Resource"] = "arn:aws:events:*:*:rule/ec2pass-member-forward"

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
        # 14. the Organization (issue 12)
        spoke_roles_scp_misses_the_member_role, spoke_roles_scp_misses_the_forwarding_roles,
        drop_action("KeepTheSpokeRoles", "iam:UpdateAssumeRolePolicy"), drop_action("KeepTheSpokeRoles", "iam:CreateRole"),
        drop_action("KeepTheSpokeRoles", "iam:AttachRolePolicy"), drop_statement("NoBorrowingTheStackSetsRole"),
        drop_action("KeepTheForwardRule", "events:DeleteRule"), drop_action("KeepTheForwardRule", "events:DisableRule"),
        drop_action("KeepTheForwardRule", "events:PutTargets"), spoke_scp_excepts_every_role, spoke_scp_misses_the_forward_rule,
        drop_action("KeepTheSpokeStacks", "cloudformation:DeleteStack"), drop_action("KeepTheSpokeStacks", "cloudformation:UpdateStack"),
        spoke_stacks_scp_on_the_wrong_name, drop_statement("OnlyTheForwardRulesSendToTheHub"), auth_tag_policy_forgets_the_member_role,
        drop_action("KeepTheHubBus", "events:DeleteEventBus"), drop_action("KeepTheBusPolicies", "events:RemovePermission"),
        bus_policies_scp_on_the_bus,
        # 15. the follow-ups and the chat options (issue 13)
        scp_followup_writes_the_whole_table, scp_followup_carve_out_covers_deletes, scp_update_carve_out_for_every_role,
        scp_denies_the_followup_its_updates, drop_statement("OnlyTheRolesUpdateItems"), scp_bot_token_readable_by_the_issuer,
        scp_followup_reads_the_signing_secret, scp_issuer_statement_covers_the_bot_token, scp_issuer_statement_misses_the_mattermost_token,
        scp_bot_key_decryptable_by_the_issuer, drop_statement("OnlyTheFollowupAndTheAdminRead"),
        drop_statement("OnlyTheFollowupAndTheAdminDecrypt"), drop_action("KeepTheKeys", "kms:ScheduleKeyDeletion"),
        # the reply key
        drop_statement("OnlyTheIssuerTheFollowupAndTheAdminRead"), drop_statement("OnlyTheIssuerTheFollowupAndTheAdminDecrypt"),
        drop_action("OnlyTheIssuerTheFollowupAndTheAdminDecrypt", "kms:CreateGrant"), scp_reply_key_readable_by_the_guard,
        scp_reply_key_denied_to_the_followup, scp_reply_key_statement_on_another_name, scp_reply_key_decrypt_on_another_alias,
        scp_reply_key_key_decryptable_by_the_guard, scp_reply_key_carve_out_by_path, scp_reply_key_only_in_the_hub_file,
        drop_action("OnlyTheAdminChangesIt", "secretsmanager:PutSecretValue"),
        # 16. attribution and response (issue 14)
        scp_attribution_may_drop_the_table, scp_denies_the_attribution_its_writes, scp_put_carve_out_for_the_followup,
        drop_statement("OnlyTheRolesPutAndDeleteItems"), drop_statement("OnlyTheAttributionTakesCalls"),
        scp_calls_statement_misses_the_call_queue, scp_calls_taken_by_the_guard, spoke_scp_misses_the_calls_forward_rule,
        # shape
        scp_too_long, misspelled_action, condition_aws_never_sets,
    ]
    for breaker in breakers:
        broken = copy.deepcopy(intact)
        breaker(broken)
        yield breaker.__name__, broken


# ---------------------------------------------------------------------------------------------
# The Slack app's manifest (infra/slack-app-manifest.yaml).
# ---------------------------------------------------------------------------------------------

MANIFEST = ROOT / "infra" / "slack-app-manifest.yaml"
# The placeholder the operator replaces with the SlackRequestUrl output (which ends with /).
MANIFEST_URL = "https://REPLACE-WITH-THE-SlackRequestUrl-OUTPUT.lambda-url.us-east-1.on.aws/"


def manifest_invariants(text):
    """The slash command at the function URL, interactivity (the Revoke buttons) at the same URL
    followed by slack/actions, and no bot scope but `commands` unless the operator uncomments the
    block with `chat:write` (SlackBotDirectMessages)."""
    import yaml

    where = "infra/slack-app-manifest.yaml"
    try:
        m = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        return [f"{where}: not YAML: {e}"]
    problems = []
    commands = (m.get("features") or {}).get("slash_commands") or []
    if [c.get("url") for c in commands] != [MANIFEST_URL]:
        problems.append(f"{where}: one slash command, with url {MANIFEST_URL} (the SlackRequestUrl output)")
    inter = (m.get("settings") or {}).get("interactivity") or {}
    if inter.get("is_enabled") is not True or inter.get("request_url") != MANIFEST_URL + "slack/actions":
        problems.append(f"{where}: settings.interactivity needs is_enabled: true and request_url {MANIFEST_URL}slack/actions (the issuer's route for button presses), found {inter}")
    scopes = ((m.get("oauth_config") or {}).get("scopes") or {}).get("bot")
    if scopes != ["commands"]:
        problems.append(f"{where}: the default bot scopes must be exactly [commands] (interactivity needs none; chat:write only for SlackBotDirectMessages, commented out), found {scopes}")
    if not re.search(r"^\s*#\s*-\s*chat:write\s*$", text, re.M):
        problems.append(f"{where}: keep the commented-out `# - chat:write` line to uncomment with SlackBotDirectMessages=Enabled")
    return problems


def broken_manifests(text):
    """Deliberately broken manifests, each of which the checks must catch."""
    uncommented = re.sub(r"^(\s*)#\s*(-\s*chat:write)\s*$", r"\1\2", text, flags=re.M)
    for name, broken in (
            ("manifest_without_interactivity", re.sub(r"(?ms)^  interactivity:\n(    .*\n)+", "", text)),
            ("manifest_interactivity_disabled", text.replace("is_enabled: true", "is_enabled: false")),
            ("manifest_buttons_to_the_command_url", text.replace(MANIFEST_URL + "slack/actions", MANIFEST_URL)),
            ("manifest_asks_chat_write_by_default", uncommented),
            ("manifest_asks_every_channel_history", text.replace("      - commands\n", "      - commands\n      - channels:history\n", 1))):
        yield name, broken


def quiet_translator_logs():
    """The translator's metrics publisher complains on stderr when nothing publishes them."""
    import logging

    logging.getLogger("samtranslator").setLevel(logging.CRITICAL)


def main(argv):
    quiet_translator_logs()
    template = load_template(TEMPLATE)
    member = load_template(MEMBER_TEMPLATE)
    org = load_template(ORG_TEMPLATE)
    policies = load_policies()
    passed = failed = 0
    findings = check(template, TEMPLATE, policies, member=member, org=org, member_path=MEMBER_TEMPLATE, org_path=ORG_TEMPLATE)
    for f in findings:
        print(f"  {f}")
    if findings:
        failed += 1
        print("FAIL infra/template.yaml, infra/member.yaml, infra/organization.yaml, infra/policies and infra/slack-app-manifest.yaml")
    else:
        passed += 1
        print("ok   infra/template.yaml, infra/member.yaml, infra/organization.yaml, infra/policies and infra/slack-app-manifest.yaml: cfn-lint, SAM transform + cfn-lint, invariants (hub, spoke, StackSet, chat options, attribution, manifest), local table, settings, parliament")
    for name, holds, message in evaluate_claims(template, policies, member, org):
        if holds:
            passed += 1
            print(f"ok   claim '{name}' (Principal Mapper, {message})")
        else:
            failed += 1
            print(f"FAIL {message}")
    if "--self-test" in argv:
        baseline = set(findings)
        manifest = MANIFEST.read_text(encoding="utf-8")
        cases = [(n, t, policies, member, org, manifest) for n, t in broken_copies(template)]
        cases += [(n, template, policies, m, org, manifest) for n, m in broken_members(member)]
        cases += [(n, template, policies, member, o, manifest) for n, o in broken_organizations(org)]
        cases += [(n, template, p, member, org, manifest) for n, p in broken_policies()]
        cases += [(n, template, policies, member, org, s) for n, s in broken_manifests(manifest)]

        def run(case):
            name, broken, pols, m, o, s = case
            # Caught means a finding the intact files do not have. cfn-lint runs only for a copy
            # that nothing quicker catches.
            caught = [f for f in check(broken, policies=pols, lint=False, member=m, org=o, manifest=s) if f not in baseline]
            return name, caught or [f for f in check(broken, policies=pols, member=m, org=o, manifest=s) if f not in baseline]

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
