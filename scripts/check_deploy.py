#!/usr/bin/env python3
"""Offline checks of the shipped deployment files, for scripts/check-deploy.sh.

Run with the .venv-deploy interpreter (it has PyYAML through kubernetes-validate).

  render DIR OUT            render the kustomize base DIR into OUT (multi-document YAML)
  same-as-kubectl DIR OUT   compare OUT with `kubectl kustomize DIR` (same objects)
  k8s-config RENDERED SECRET BIN
                            run `BIN check-config` with the Deployment's environment
                            and its mounted mcpgate.toml, and check that the result
                            fits the manifests (replicas on PostgreSQL, port, host)
  docker-config DOCKERFILE BIN
                            run `BIN check-config` with the image's ENV defaults
  file-config TOML UNIT BIN run `BIN check-config` on TOML with the unit's Environment=

The renderer knows only the kustomization keys the base uses and refuses any
other, so it can never silently render something kustomize would not.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

KNOWN_KEYS = {"apiVersion", "kind", "resources", "configMapGenerator", "generatorOptions"}
# Files in the base directory that are deliberately not resources.
NOT_RESOURCES = {"kustomization.yaml", "secret.example.yaml"}


class Problem(Exception):
    pass


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def config_map_hash(config_map):
    """kustomize's name suffix: sha256 of the JSON of kind, name and data,
    hex, first ten characters with a few letters swapped (api/hasher). Its
    name lookup finds nothing (it looks up one field called "metadata/name"),
    so the name hashed is "" in every kustomize this was compared with."""
    encoded = {"kind": "ConfigMap", "name": "", "data": config_map["data"]}
    text = json.dumps(encoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # Go's encoder escapes these three for HTML safety; the hash sees its bytes.
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    swaps = {"0": "g", "1": "h", "3": "k", "a": "m", "e": "t"}
    return "".join(swaps.get(c, c) for c in digest[:10])


def rename_config_map_refs(obj, renames):
    """Point every ConfigMap reference in a pod template at the hashed name."""
    spec = obj.get("spec", {}).get("template", {}).get("spec")
    if spec is None:
        return
    for volume in spec.get("volumes", []):
        ref = volume.get("configMap")
        if ref and ref.get("name") in renames:
            ref["name"] = renames[ref["name"]]
        for source in volume.get("projected", {}).get("sources", []):
            ref = source.get("configMap")
            if ref and ref.get("name") in renames:
                ref["name"] = renames[ref["name"]]
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        for env_from in container.get("envFrom", []):
            ref = env_from.get("configMapRef")
            if ref and ref.get("name") in renames:
                ref["name"] = renames[ref["name"]]
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("configMapKeyRef")
            if ref and ref.get("name") in renames:
                ref["name"] = renames[ref["name"]]


def render(base):
    base = Path(base)
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(kustomization) - KNOWN_KEYS
    if unknown:
        raise Problem(f"kustomization.yaml: keys this check cannot render: {sorted(unknown)}")
    resources = kustomization.get("resources", [])
    listed = set(resources)
    present = {p.name for p in base.glob("*.yaml")} - NOT_RESOURCES
    if listed != present:
        raise Problem(
            "kustomization.yaml resources do not match the files: "
            f"not listed {sorted(present - listed)}, missing {sorted(listed - present)}"
        )
    objects = []
    for name in resources:
        for doc in load_all(base / name):
            objects.append(doc)
    options = kustomization.get("generatorOptions", {})
    unknown = set(options) - {"labels"}
    if unknown:
        raise Problem(f"generatorOptions: keys this check cannot render: {sorted(unknown)}")
    renames = {}
    for generator in kustomization.get("configMapGenerator", []):
        unknown = set(generator) - {"name", "files"}
        if unknown:
            raise Problem(f"configMapGenerator: keys this check cannot render: {sorted(unknown)}")
        data = {}
        for entry in generator.get("files", []):
            key, _, path = entry.rpartition("=")
            path = path or entry
            data[key or Path(path).name] = (base / path).read_text(encoding="utf-8")
        config_map = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": generator["name"]},
            "data": data,
        }
        if options.get("labels"):
            config_map["metadata"]["labels"] = dict(options["labels"])
        hashed = f"{generator['name']}-{config_map_hash(config_map)}"
        renames[generator["name"]] = hashed
        config_map["metadata"]["name"] = hashed
        objects.append(config_map)
    for obj in objects:
        rename_config_map_refs(obj, renames)
    return objects


def key(obj):
    return (obj.get("apiVersion"), obj.get("kind"), obj.get("metadata", {}).get("name"))


def same_as_kubectl(base, rendered_path):
    ours = {key(o): o for o in load_all(rendered_path)}
    out = subprocess.run(
        ["kubectl", "kustomize", base], check=True, capture_output=True, text=True
    ).stdout
    theirs = {key(o): o for o in yaml.safe_load_all(out) if o is not None}
    if ours != theirs:
        names = sorted(set(ours) ^ set(theirs)) or sorted(k for k in ours if ours[k] != theirs.get(k))
        raise Problem(f"our rendering differs from kubectl kustomize: {names}")


def run_check_config(binary, env, cwd):
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": cwd}
    clean.update(env)
    result = subprocess.run(
        [str(Path(binary).resolve()), "check-config"], env=clean, cwd=cwd, capture_output=True, text=True
    )
    return result.returncode, result.stdout, result.stderr


def effective(stdout):
    return tomllib.loads(stdout)


def only(objects, kind):
    found = [o for o in objects if o.get("kind") == kind]
    if len(found) != 1:
        raise Problem(f"expected one {kind}, found {len(found)}")
    return found[0]


def k8s_config(rendered_path, secret_path, binary):
    objects = load_all(rendered_path)
    deployment = only(objects, "Deployment")
    ingress = only(objects, "Ingress")
    secret = only(load_all(secret_path), "Secret")
    config_maps = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "ConfigMap"}
    pod = deployment["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "mcpgate")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    with tempfile.TemporaryDirectory() as tmp:
        # Lay out the ConfigMap volumes where the container would see them.
        mounts = {}
        for mount in container.get("volumeMounts", []):
            ref = volumes[mount["name"]].get("configMap")
            if ref:
                local = Path(tmp) / mount["name"]
                local.mkdir()
                for name, text in config_maps[ref["name"]]["data"].items():
                    (local / name).write_text(text, encoding="utf-8")
                mounts[mount["mountPath"].rstrip("/")] = str(local)
        env = {}
        for var in container.get("env", []):
            if "value" in var:
                value = var["value"]
                for mount_path, local in mounts.items():
                    if value.startswith(mount_path + "/"):
                        value = local + value[len(mount_path):]
                env[var["name"]] = value
            elif "secretKeyRef" in var.get("valueFrom", {}):
                ref = var["valueFrom"]["secretKeyRef"]
                if ref["name"] != secret["metadata"]["name"]:
                    raise Problem(f"{var['name']}: Secret {ref['name']} is not the example's")
                if ref["key"] not in secret["stringData"]:
                    raise Problem(f"{var['name']}: secret.example.yaml has no key {ref['key']}")
                env[var["name"]] = secret["stringData"][ref["key"]]
            else:
                raise Problem(f"{var['name']}: a kind of env source this check does not know")
        code, out, err = run_check_config(binary, env, tmp)
        if code != 0:
            raise Problem(f"mcpgate check-config with the Deployment's environment failed:\n{err}")
    cfg = effective(out.split("\n", 1)[1])
    problems = []
    if deployment["spec"]["replicas"] > 1 and not cfg["store"]["url"].startswith("postgres"):
        problems.append("several replicas need store.url = postgres://...")
    port = int(cfg["listen"].rsplit(":", 1)[1])
    if port not in [p["containerPort"] for p in container["ports"]]:
        problems.append(f"listen port {port} is not a containerPort")
    if not cfg["listen"].startswith("0.0.0.0:"):
        problems.append("listen must be 0.0.0.0 in a pod")
    hosts = {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
    public = cfg["public_url"].rstrip("/")
    if public not in {f"https://{h}" for h in hosts}:
        problems.append(f"public_url {public} is not https:// on an Ingress TLS host {sorted(hosts)}")
    if problems:
        raise Problem("; ".join(problems))
    print(f"check-config: valid with the Deployment's environment (store {cfg['store']['url']})")


def dockerfile_env(dockerfile):
    """The final stage's ENV key=value pairs (line continuations joined)."""
    lines = Path(dockerfile).read_text(encoding="utf-8").replace("\\\n", " ").splitlines()
    env = {}
    for line in lines:
        words = line.split()
        if words and words[0].upper() == "FROM":
            env = {}
        elif words and words[0].upper() == "ENV":
            for word in words[1:]:
                name, _, value = word.partition("=")
                env[name] = value
    return env


def docker_config(dockerfile, binary):
    env = dockerfile_env(dockerfile)
    if not env.get("MCPGATE_LISTEN", "").startswith("0.0.0.0:"):
        raise Problem("the image must set MCPGATE_LISTEN=0.0.0.0:PORT")
    with tempfile.TemporaryDirectory() as tmp:
        # Without public_url, local mode must refuse to start, naming it.
        code, _, err = run_check_config(binary, env, tmp)
        if code != 2 or "public_url" not in err:
            raise Problem(f"the image's defaults without MCPGATE_PUBLIC_URL should be refused:\n{err}")
        code, _, err = run_check_config(
            binary, {**env, "MCPGATE_PUBLIC_URL": "https://mcp.example.com"}, tmp
        )
        if code != 0:
            raise Problem(f"the image's defaults with MCPGATE_PUBLIC_URL failed:\n{err}")
    print("check-config: the image's ENV defaults are valid once MCPGATE_PUBLIC_URL is set")


def file_config(toml, unit, binary):
    env = {}
    for line in Path(unit).read_text(encoding="utf-8").splitlines():
        if line.startswith("Environment="):
            name, _, value = line[len("Environment="):].partition("=")
            env[name] = value
    env["MCPGATE_CONFIG"] = str(Path(toml).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        code, _, err = run_check_config(binary, env, tmp)
    if code != 0:
        raise Problem(f"mcpgate check-config {toml} failed:\n{err}")
    print(f"check-config: {toml} is valid with the unit's environment")


def main(argv):
    command, args = argv[1], argv[2:]
    try:
        if command == "render":
            objects = render(args[0])
            with open(args[1], "w", encoding="utf-8") as f:
                yaml.safe_dump_all(objects, f, sort_keys=False)
            print(f"rendered {len(objects)} objects from {args[0]}")
        elif command == "same-as-kubectl":
            if shutil.which("kubectl") is None:
                print("kubectl not found: the rendering is not compared with kubectl kustomize")
                return 0
            same_as_kubectl(args[0], args[1])
            print("the rendering is the same as kubectl kustomize's")
        elif command == "k8s-config":
            k8s_config(*args)
        elif command == "docker-config":
            docker_config(*args)
        elif command == "file-config":
            file_config(*args)
        else:
            raise Problem(f"unknown command {command}")
    except (Problem, OSError, KeyError, yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        print(f"check_deploy.py {command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
