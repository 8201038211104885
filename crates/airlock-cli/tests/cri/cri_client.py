#!/usr/bin/env python3
"""A small CRI client for the tests: compiles cri_min.proto with
grpcio-tools into OUT, then runs one pod with one container under a
runtime handler over containerd's CRI socket and prints what happened as
one JSON object.

    cri_client.py SOCKET OUT HANDLER IMAGE LOGDIR -- CMD...
"""
import importlib
import json
import os
import sys
import time


def main():
    sock, out, handler, image, logdir = sys.argv[1:6]
    cmd = sys.argv[7:]
    here = os.path.dirname(os.path.abspath(__file__))
    from grpc_tools import protoc

    rc = protoc.main(["protoc", f"-I{here}", f"--python_out={out}", f"--grpc_python_out={out}",
                      os.path.join(here, "cri_min.proto")])
    if rc != 0:
        raise SystemExit("protoc failed")
    sys.path.insert(0, out)
    import grpc

    pb = importlib.import_module("cri_min_pb2")
    rpc = importlib.import_module("cri_min_pb2_grpc")
    ch = grpc.insecure_channel(f"unix://{sock}")
    rt = rpc.RuntimeServiceStub(ch)
    res = {"version": rt.Version(pb.VersionRequest(version="v1"), timeout=30).runtime_version}
    meta = pb.PodSandboxMetadata(name="airlock-pod", uid="uid-airlock-1", namespace="default", attempt=0)
    pcfg = pb.PodSandboxConfig(metadata=meta, hostname="airlock-pod", log_directory=logdir)
    try:
        pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pcfg, runtime_handler=handler),
                               timeout=120).pod_sandbox_id
    except grpc.RpcError as e:
        res["run_pod_error"] = e.details()
        print(json.dumps(res))
        return
    res["pod"] = pod
    ccfg = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="main", attempt=0),
        image=pb.ImageSpec(image=image),
        command=cmd,
        envs=[pb.KeyValue(key="GREETING", value="hello from the CRI")],
        log_path="main.log",
    )
    try:
        cid = rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=ccfg, sandbox_config=pcfg),
                                 timeout=120).container_id
        res["container"] = cid
        rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=120)
        end = time.time() + 60
        while time.time() < end:
            st = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid), timeout=30).status
            if st.state == pb.CONTAINER_EXITED:
                break
            time.sleep(0.2)
        res["state"] = pb.ContainerState.Name(st.state)
        res["exit_code"] = st.exit_code
        res["reason"] = st.reason
        res["log_path"] = st.log_path
        rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)
    except grpc.RpcError as e:
        res["container_error"] = e.details()
    rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    res["removed"] = True
    print(json.dumps(res))


if __name__ == "__main__":
    main()
