// billing-ledger console: the only script. Shows each UTC time's local equivalent on hover.
document.querySelectorAll("time[datetime]").forEach(function (el) {
  var at = new Date(el.getAttribute("datetime"));
  if (!isNaN(at)) {
    el.title = at.toLocaleString() + " (your local time)";
  }
});
