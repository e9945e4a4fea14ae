"""Run by Nova's own Python (.cache/nova-venv): parse a `pcimgr export nova` file as
nova-compute does (oslo.config, [pci] device_spec through nova.pci.whitelist, alias
through nova.pci.request; [devices] enabled_mdev_types and the [mdev_TYPE] groups through
nova.conf.devices' own dynamic options) and match every device given on stdin against it.

stdin: {"config": PATH, "devices": [{"vendor_id", "product_id", "address",
"parent_addr"}]}; stdout: {"matched": [address...], "tags": {address: tags},
"aliases": {name: [numa_policy, specs]}, "mdev_types": {type: {"device_addresses",
"max_instances"}}}; a parse error exits 1 with Nova's message.
"""

import json
import sys
import warnings

warnings.simplefilter("ignore")  # eventlet's deprecation banner

import nova.conf  # noqa: E402
import nova.conf.devices  # noqa: E402
from nova import exception  # noqa: E402
from nova.pci import request, whitelist  # noqa: E402


def main() -> None:
    given = json.load(sys.stdin)
    conf = nova.conf.CONF
    conf([], project="nova", default_config_files=[given["config"]])
    try:
        specs = whitelist.Whitelist(conf.pci.device_spec)
        aliases = request.get_alias_from_config()
    except exception.NovaException as e:
        print(f"nova refused the configuration: {e}", file=sys.stderr)
        sys.exit(1)
    nova.conf.devices.register_dynamic_opts(conf)  # as nova-compute's libvirt driver does
    mdev_types = {t: {"device_addresses": list(conf[f"mdev_{t}"].device_addresses),
                      "max_instances": conf[f"mdev_{t}"].max_instances}
                  for t in conf.devices.enabled_mdev_types}
    matched, tags = [], {}
    for dev in given["devices"]:
        spec = specs.device_assignable(dev)
        if spec is not None:
            matched.append(dev["address"])
            tags[dev["address"]] = spec.get_tags()
    print(json.dumps({"matched": matched, "tags": tags, "aliases": aliases,
                      "specs": len(specs.specs), "mdev_types": mdev_types}))


main()
