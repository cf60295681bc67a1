"""Local AWS set-up for ec2pass, against the moto server.

    python dev/aws_local.py wait            wait until moto answers
    python dev/aws_local.py create-table    create the table from infra/template.yaml
    python dev/aws_local.py create-topic    create the alert topic named by EC2PASS_ALERT_TOPIC_ARN
    python dev/aws_local.py create-secret   create the Secrets Manager secrets named by
                                            EC2PASS_SLACK_SIGNING_SECRET_ARN,
                                            EC2PASS_MATTERMOST_TOKEN_SECRET_ARN and
                                            EC2PASS_REPLY_KEY_SECRET_ARN, holding
                                            EC2PASS_DEV_SIGNING_SECRET,
                                            EC2PASS_DEV_MATTERMOST_TOKEN and
                                            EC2PASS_DEV_REPLY_KEY
    python dev/aws_local.py create-queues   create the state-change queue named by
                                            EC2PASS_STATE_CHANGE_QUEUE_URL, its dead-letter
                                            queue, and the EventBridge rule that feeds it

The table is created from the `AWS::DynamoDB::Table` resource in infra/template.yaml (key schema,
attribute definitions, indexes, TTL), so the local table and the deployed one have one definition.
Settings (endpoint, region, table name) come from the environment, i.e. dev/local.env.
"""

import json
import os
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "infra" / "template.yaml"


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation YAML: short-form intrinsics (!Ref, !GetAtt, ...) become their
    long form ({"Ref": ...}, {"Fn::GetAtt": ...})."""


def _intrinsic(loader, suffix, node):
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path=TEMPLATE):
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=CfnLoader)


def table_resource(template):
    tables = [r for r in template["Resources"].values() if r["Type"] == "AWS::DynamoDB::Table"]
    if len(tables) != 1:
        sys.exit(f"expected one AWS::DynamoDB::Table in {TEMPLATE}, found {len(tables)}")
    return tables[0]["Properties"]


def create_table_args(props, name):
    """boto3 create_table arguments from the template's table properties."""
    args = {
        "TableName": name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if props.get("GlobalSecondaryIndexes"):
        args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    return args


def endpoint():
    url = os.environ.get("AWS_ENDPOINT_URL")
    if not url:
        sys.exit("AWS_ENDPOINT_URL is not set: source dev/local.env first (make does)")
    return url


def wait(timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(endpoint() + "/moto-api/", timeout=1)
            return
        except Exception:
            if time.monotonic() > deadline:
                sys.exit(f"moto did not answer at {endpoint()} within {timeout:.0f}s")
            time.sleep(0.2)


def create_table(name=None):
    name = name or os.environ["EC2PASS_TABLE"]
    props = table_resource(load_template())
    ddb = boto3.client("dynamodb", endpoint_url=endpoint())
    if name in ddb.list_tables()["TableNames"]:
        print(f"table {name} already exists")
        return
    ddb.create_table(**create_table_args(props, name))
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        ddb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
        )
    print(f"created table {name} from {TEMPLATE.relative_to(ROOT)}")


def create_topic():
    name = os.environ["EC2PASS_ALERT_TOPIC_ARN"].rsplit(":", 1)[-1]
    sns = boto3.client("sns", endpoint_url=endpoint())
    arn = sns.create_topic(Name=name)["TopicArn"]
    if arn != os.environ["EC2PASS_ALERT_TOPIC_ARN"]:
        sys.exit(f"moto created {arn}, but dev/local.env says {os.environ['EC2PASS_ALERT_TOPIC_ARN']}")
    print(f"created topic {arn}")


def create_secret():
    """The issuer's signing secret and Mattermost token, and the reply key the issuer seals reply
    URLs with and the follow-up function opens them with, in moto's Secrets Manager: the functions
    read them there, as they read the deployed ones, and never see EC2PASS_DEV_SIGNING_SECRET,
    EC2PASS_DEV_MATTERMOST_TOKEN or EC2PASS_DEV_REPLY_KEY themselves. (Deployed, CloudFormation
    generates the reply key: infra/template.yaml, ReplyKey.)"""
    sm = boto3.client("secretsmanager", endpoint_url=endpoint())
    for name_var, value_var in [
        ("EC2PASS_SLACK_SIGNING_SECRET_ARN", "EC2PASS_DEV_SIGNING_SECRET"),
        ("EC2PASS_MATTERMOST_TOKEN_SECRET_ARN", "EC2PASS_DEV_MATTERMOST_TOKEN"),
        ("EC2PASS_REPLY_KEY_SECRET_ARN", "EC2PASS_DEV_REPLY_KEY"),
    ]:
        name, value = os.environ[name_var], os.environ[value_var]
        try:
            sm.create_secret(Name=name, SecretString=value)
            print(f"created secret {name}")
        except sm.exceptions.ResourceExistsException:
            sm.put_secret_value(SecretId=name, SecretString=value)
            print(f"secret {name} already exists; its value is set again")


def create_queues():
    """The state-change queue, its dead-letter queue and the EventBridge rule that feeds it, as
    infra/template.yaml has them (StateChangeQueue, GuardFailures, GuardFunctionStateChange).
    Locally nothing polls the queue: the tests and the demo play the event source mapping
    (tests/src/esm.rs). A short visibility timeout, so a message handed back without its own
    visibility returns within a test's patience."""
    url = os.environ["EC2PASS_STATE_CHANGE_QUEUE_URL"]
    name = url.rstrip("/").rsplit("/", 1)[-1]
    failures = name.replace("state-changes", "guard-failures")
    sqs = boto3.client("sqs", endpoint_url=endpoint())
    dlq = sqs.create_queue(QueueName=failures)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    template = load_template()
    queue = template["Resources"]["StateChangeQueue"]["Properties"]
    receives = queue["RedrivePolicy"]["maxReceiveCount"]
    made = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": "20",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": receives}),
        },
    )["QueueUrl"]
    if made.rstrip("/").rsplit("/", 1)[-1] != name:
        sys.exit(f"moto created {made}, but dev/local.env says {url}")
    arn = sqs.get_queue_attributes(QueueUrl=made, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rule = template["Resources"]["GuardFunctionStateChange"]["Properties"]
    events = boto3.client("events", endpoint_url=endpoint())
    events.put_rule(Name=name, EventPattern=json.dumps(rule["EventPattern"]), State="ENABLED")
    events.put_targets(Rule=name, Targets=[{"Id": "state-changes", "Arn": arn}])
    print(f"created queue {name} (dead letters to {failures}) and rule {name}")
    create_call_queue(template, sqs, events)


def _call_rule(node):
    """The EventBridge pattern in the template that routes CloudTrail's calls."""
    if isinstance(node, dict):
        for key in ("EventPattern", "Pattern"):
            pattern = node.get(key)
            if isinstance(pattern, dict) and "AWS API Call via CloudTrail" in pattern.get("detail-type", []):
                return pattern
        for value in node.values():
            found = _call_rule(value)
            if found:
                return found
    elif isinstance(node, list):
        for value in node:
            found = _call_rule(value)
            if found:
                return found
    return None


def create_call_queue(template, sqs, events):
    """The attribution path's queue (CloudTrail's RunInstances/StartInstances calls) and the rule
    that feeds it, with the template's pattern. Locally nothing polls it: the tests and the demo
    hand its messages to the attribution path in-process."""
    url = os.environ["EC2PASS_CALL_QUEUE_URL"]
    name = url.rstrip("/").rsplit("/", 1)[-1]
    pattern = _call_rule(template)
    if pattern is None:
        sys.exit("infra/template.yaml has no rule for 'AWS API Call via CloudTrail'")
    made = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "20"})["QueueUrl"]
    if made.rstrip("/").rsplit("/", 1)[-1] != name:
        sys.exit(f"moto created {made}, but dev/local.env says {url}")
    arn = sqs.get_queue_attributes(QueueUrl=made, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=name, EventPattern=json.dumps(pattern), State="ENABLED")
    events.put_targets(Rule=name, Targets=[{"Id": "calls", "Arn": arn}])
    print(f"created queue {name} and rule {name}")


def main(argv):
    commands = {
        "wait": wait,
        "create-table": create_table,
        "create-topic": create_topic,
        "create-secret": create_secret,
        "create-queues": create_queues,
    }
    if len(argv) < 2 or argv[1] not in commands:
        sys.exit(__doc__)
    commands[argv[1]](*argv[2:])


if __name__ == "__main__":
    main(sys.argv)
