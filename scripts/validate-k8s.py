#!/usr/bin/env python3
"""Validates contrib/k8s/ offline: every Kubernetes manifest against the
OpenAPI-derived JSON schemas of the Kubernetes version named (the
kubernetes-validate package from PyPI ships them), strictly (unknown fields
are errors); agent-sandbox's SandboxTemplate (a CRD, not in those schemas)
by its own fields, its podTemplate as a Pod; the containerd drop-in as
TOML with the keys the CRI reads.

    python validate-k8s.py [--k8s-version 1.30.0] FILE...

Exit 0 when every document is valid, 1 otherwise (each problem printed).
"""
import argparse
import sys
import tomllib

import kubernetes_validate
import yaml


def check_sandbox_template(doc, version):
    errs = []
    if doc.get("apiVersion") != "extensions.agents.x-k8s.io/v1alpha1":
        errs.append("apiVersion must be extensions.agents.x-k8s.io/v1alpha1")
    if not (doc.get("metadata") or {}).get("name"):
        errs.append("metadata.name is required")
    spec = doc.get("spec") or {}
    extra = set(spec) - {"podTemplate", "networkPolicy", "networkPolicyManagement"}
    if extra:
        errs.append(f"unknown spec fields {sorted(extra)}")
    pt = spec.get("podTemplate")
    if not isinstance(pt, dict) or "spec" not in pt:
        errs.append("spec.podTemplate.spec is required")
        return errs
    if set(pt) - {"metadata", "spec"}:
        errs.append(f"unknown podTemplate fields {sorted(set(pt) - {'metadata', 'spec'})}")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": dict(pt.get("metadata") or {}, name="template"),
        "spec": pt["spec"],
    }
    try:
        kubernetes_validate.validate(pod, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        errs.append(f"podTemplate: {e.message} at {'.'.join(map(str, e.path))}")
    if pt["spec"].get("runtimeClassName") != "airlock":
        errs.append("podTemplate.spec.runtimeClassName must be airlock")
    return errs


def check_containerd(path):
    with open(path, "rb") as f:
        cfg = tomllib.load(f)
    errs = []
    if cfg.get("version") != 2:
        errs.append("version must be 2")
    try:
        rt = cfg["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["airlock"]
    except KeyError:
        return errs + ["no plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.airlock"]
    if rt.get("runtime_type") != "io.containerd.runc.v2":
        errs.append("runtime_type must be io.containerd.runc.v2")
    opts = rt.get("options", {})
    if not str(opts.get("BinaryName", "")).endswith("/airlock-runc"):
        errs.append("options.BinaryName must be the airlock-runc path")
    if opts.get("SystemdCgroup") is not False:
        errs.append("options.SystemdCgroup must be false (airlock-runc refuses --systemd-cgroup)")
    return errs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k8s-version", default="1.30.0")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    bad = 0
    for path in a.files:
        if path.endswith(".toml"):
            errs = check_containerd(path)
            for e in errs:
                print(f"{path}: {e}")
            bad += len(errs)
            if not errs:
                print(f"{path}: ok (containerd drop-in)")
            continue
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for d in docs:
            what = f"{path}: {d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
            if d.get("kind") == "SandboxTemplate":
                errs = check_sandbox_template(d, a.k8s_version)
            else:
                errs = []
                try:
                    kubernetes_validate.validate(d, a.k8s_version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    errs.append(f"{e.message} at {'.'.join(map(str, e.path))}")
                except kubernetes_validate.SchemaNotFoundError as e:
                    errs.append(f"no schema: {e}")
                # A ConfigMap's embedded containerd drop-in is checked too.
                if d.get("kind") == "ConfigMap":
                    for k, v in (d.get("data") or {}).items():
                        if k.endswith(".toml"):
                            try:
                                tomllib.loads(v)
                            except tomllib.TOMLDecodeError as e:
                                errs.append(f"data.{k}: {e}")
            for e in errs:
                print(f"{what}: {e}")
            bad += len(errs)
            if not errs:
                print(f"{what}: ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
