"""The interop scenarios. Each gets its own relay, its own ports (`ctx.base` .. +199) and work
directory, and returns a short note for its PASS line or raises Fail.

The scenarios are grouped by theme in the modules beside this one; what they share is in
`common`. `ALL` lists them in the order they run, which also sets their ports."""
from .basic import baresip_srtp_plain, kamailio_baresip, kamailio_baresip_new_suites
from .common import Ctx, Scenario
from .continuity import sipp_pcap_twice, sipp_transfer
from .deploy import deploy_failover, deploy_refused_media
from .dialogs import manage_forking, sipp_delayed_offer, sipp_early_media, sipp_long_ringing, sipp_t38
from .fleet import fleet_drain, fleet_host_killed
from .gstreamer import gstreamer_rtcp_loss, gstreamer_srtp, gstreamer_srtp_new_suites
from .ha import ha_takeover
from .interfaces import kamailio_direction
from .linphone import linphone_capneg, linphone_rekey
from .offers import sipp_offers
from .suites import kamailio_each_new_suite

__all__ = ["ALL", "Ctx", "Scenario"]


ALL = [
    Scenario("kamailio-baresip-srtp", kamailio_baresip, 40),
    Scenario("kamailio-baresip-new-suites", kamailio_baresip_new_suites, 40),
    Scenario("kamailio-each-new-suite", kamailio_each_new_suite, 90),
    Scenario("baresip-srtp-to-plain", baresip_srtp_plain, 40),
    Scenario("linphone-capneg", linphone_capneg, 60),
    Scenario("linphone-rekey-every-reinvite", linphone_rekey, 60),
    Scenario("gstreamer-srtp-both-suites", gstreamer_srtp, 40),
    Scenario("gstreamer-srtp-new-suites", gstreamer_srtp_new_suites, 40),
    Scenario("sipp-real-phone-offers", sipp_offers, 60),
    Scenario("manage-forking-early-media", manage_forking, 40),
    Scenario("sipp-early-media-183-200", sipp_early_media, 40),
    Scenario("sipp-ringing-past-media-timeout", sipp_long_ringing, 40),
    Scenario("sipp-t38-reinvite", sipp_t38, 30),
    Scenario("sipp-delayed-offer", sipp_delayed_offer, 30),
    Scenario("sipp-pcap-replay-to-srtp", sipp_pcap_twice, 40),
    Scenario("sipp-transfer-to-srtp", sipp_transfer, 30),
    Scenario("deploy-kamailio-relay-failover", deploy_failover, 150),
    Scenario("kamailio-direction-internal-external", kamailio_direction, 60),
    Scenario("gstreamer-rtcp-loss-in-delete", gstreamer_rtcp_loss, 40),
    Scenario("deploy-kamailio-refused-media", deploy_refused_media, 40),
    Scenario("kamailio-baresip-ha-takeover", ha_takeover, 60),
    Scenario("fleet-host-killed", fleet_host_killed, 120),
    Scenario("fleet-drain", fleet_drain, 150),
]
