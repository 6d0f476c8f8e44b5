# backupgen: convert a backup `schedule` to a list of systemd OnCalendar
# expressions (`expr: [ "OnCalendar" ... ]`).
#
# A 5-field cron expression or @-shortcut is converted with exactly cron's
# (cronie's) meaning; anything else is a systemd calendar expression and is
# passed through, trimmed (backup-worker check-config then checks it with
# the Go twin of systemd's calendar parser, at build time). Invalid cron
# throws "backupgen: invalid schedule \"...\": <reason>".
#
# This mirrors schedule/schedule.go byte for byte (see its package
# documentation for the output format and the day-of-month/day-of-week
# rule); both are tested against internal/schedule/testdata/cases.json. Only builtins
# are used, so evaluating it needs no nixpkgs.
let
  b = builtins;

  maxLen = 256;

  range = lo: hi: b.genList (i: lo + i) (hi - lo + 1);
  mod = a: n: a - n * (b.div a n);
  reverse = l: b.genList (i: b.elemAt l (b.length l - 1 - i)) (b.length l);
  indexOf =
    x: l:
    let
      is = b.filter (i: b.elemAt l i == x) (range 0 (b.length l - 1));
    in
    if is == [ ] then null else b.head is;

  # Characters that cannot be written in a Nix string literal.
  hexDigits = [
    "0"
    "1"
    "2"
    "3"
    "4"
    "5"
    "6"
    "7"
    "8"
    "9"
    "a"
    "b"
    "c"
    "d"
    "e"
    "f"
  ];
  chr =
    code:
    b.fromJSON "\"\\u00${b.elemAt hexDigits (b.div code 16)}${b.elemAt hexDigits (mod code 16)}\"";

  # POSIX [[:space:]] in the C locale, spelled out to be locale-independent.
  spaceChars = " \t\n\r" + chr 11 + chr 12;
  # C0 controls (NUL cannot occur in a Nix string), DEL and C1 controls.
  controls = map chr (range 1 31 ++ range 127 159);
  hasControl = s: b.replaceStrings controls (map (_: "") controls) s != s;

  trim =
    s:
    let
      m = b.match "[${spaceChars}]*(.*[^${spaceChars}])[${spaceChars}]*" s;
    in
    if m == null then "" else b.head m;
  splitFields = s: b.filter (x: b.isString x && x != "") (b.split "[${spaceChars}]+" s);
  isCronField = f: b.match "[0-9a-zA-Z*,/-]+" f != null;

  isDigits = s: b.match "[0-9]+" s != null;
  # Quartz cron's "?", "L", "W" and "#", which cron does not have.
  isQuartz = e: b.match ".*[?#].*" e != null || b.match "[0-9]*[LWlw]+" e != null;
  isLetters = s: b.match "[a-zA-Z]+" s != null;
  chars = s: b.genList (i: b.substring i 1 s) (b.stringLength s);
  toLower = b.replaceStrings (chars "ABCDEFGHIJKLMNOPQRSTUVWXYZ") (chars "abcdefghijklmnopqrstuvwxyz");
  # Leading zeros are fine ("05"); more than four digits are out of range
  # anyway and might not fit an integer.
  toNumber =
    s:
    let
      d = b.head (b.match "0*([0-9]+)" s);
    in
    if b.stringLength d > 4 then null else b.fromJSON d;

  # Converted through their cron equivalents: cron's @weekly is Sunday,
  # systemd's `weekly` is Monday.
  shortcuts = {
    "@hourly" = "0 * * * *";
    "@daily" = "0 0 * * *";
    "@midnight" = "0 0 * * *";
    "@weekly" = "0 0 * * 0";
    "@monthly" = "0 0 1 * *";
    "@yearly" = "0 0 1 1 *";
    "@annually" = "0 0 1 1 *";
  };

  cronFields = [
    {
      name = "minute";
      lo = 0;
      hi = 59;
      names = [ ];
    }
    {
      name = "hour";
      lo = 0;
      hi = 23;
      names = [ ];
    }
    {
      name = "day-of-month";
      lo = 1;
      hi = 31;
      names = [ ];
    }
    {
      name = "month";
      lo = 1;
      hi = 12;
      base = 1;
      hint = "jan..dec";
      names = [
        "jan"
        "feb"
        "mar"
        "apr"
        "may"
        "jun"
        "jul"
        "aug"
        "sep"
        "oct"
        "nov"
        "dec"
      ];
    }
    {
      name = "day-of-week";
      lo = 0;
      hi = 7;
      base = 0;
      hint = "sun..sat";
      names = [
        "sun"
        "mon"
        "tue"
        "wed"
        "thu"
        "fri"
        "sat"
      ];
    }
  ];

  # Expands one cron field to the ascending list of its values.
  parseField =
    fail: f: text:
    let
      q = s: "\"${s}\"";
      field = "cron field ${q f.name}";
      parseElem =
        elem:
        let
          invalid = fail "${field} has invalid element ${q elem}";
          value =
            tok:
            if isDigits tok then
              let
                n = toNumber tok;
              in
              if n == null || n < f.lo || n > f.hi then
                fail "${field} value ${tok} out of range ${toString f.lo}-${toString f.hi}"
              else
                n
            else if isLetters tok then
              let
                i = indexOf (toLower tok) f.names;
              in
              if i != null then
                f.base + i
              else if f.names == [ ] then
                fail "${field} value ${q tok} is not a number"
              else
                fail "${field} value ${q tok} is not a number or name (${f.hint})"
            else
              invalid;
          slash = b.filter b.isString (b.split "/" elem);
          hasStep = b.length slash > 1;
          base = b.head slash;
          stepText = b.concatStringsSep "/" (b.tail slash);
          step =
            if !hasStep then
              1
            else if !isDigits stepText then
              invalid
            else
              let
                n = toNumber stepText;
              in
              if n == null || n < 1 || n > f.hi then
                fail "${field} step ${stepText} out of range 1-${toString f.hi}"
              else
                n;
          dash = b.filter b.isString (b.split "-" base);
          isRange = b.length dash > 1;
          endText = b.concatStringsSep "-" (b.tail dash);
          start = value (b.head dash);
          # "fri-sun" means Friday to Sunday: the name "sun" ending a range
          # is cron's Sunday 7.
          end =
            let
              e = value endText;
            in
            if f.name == "day-of-week" && e == 0 && start > 0 && isLetters endText then 7 else e;
          bounds =
            if base == "*" then
              [
                f.lo
                f.hi
              ]
            else if isRange then
              if start > end then
                fail "${field} range ${q base} is reversed (${toString start} > ${toString end})"
              else
                [
                  start
                  end
                ]
            # cronie: "N/step" means "N-max/step".
            else if hasStep then
              [
                start
                f.hi
              ]
            else
              [
                start
                start
              ];
          lo = b.elemAt bounds 0;
          hi = b.elemAt bounds 1;
        in
        if elem == "" then
          fail "${field} has an empty list element in ${q text}"
        else if isQuartz elem then
          fail "${field} has invalid element ${q elem}: \"?\", \"L\", \"W\" and \"#\" are Quartz cron syntax; plain cron writes \"*\" for any day"
        else
          b.seq step (b.genList (i: lo + i * step) (b.div (hi - lo) step + 1));
      values = b.concatLists (map parseElem (b.filter b.isString (b.split "," text)));
    in
    b.filter (v: b.elem v values) (range f.lo f.hi);

  # Formats an ascending list of values, runs of three or more as "a..b".
  formatRuns =
    name: xs:
    let
      # Runs as [ first last ], last run first.
      runs = b.foldl' (
        acc: x:
        if acc != [ ] && x == b.elemAt (b.head acc) 1 + 1 then
          [
            [
              (b.elemAt (b.head acc) 0)
              x
            ]
          ]
          ++ b.tail acc
        else
          [
            [
              x
              x
            ]
          ]
          ++ acc
      ) [ ] xs;
      format =
        r:
        let
          a = b.elemAt r 0;
          z = b.elemAt r 1;
        in
        if z - a >= 2 then
          "${name a}..${name z}"
        else if z == a + 1 then
          "${name a},${name z}"
        else
          name a;
    in
    b.concatStringsSep "," (map format (reverse runs));

  pad2 = n: if n < 10 then "0${toString n}" else toString n;
  numbers = lo: hi: set: if b.length set == hi - lo + 1 then "*" else formatRuns pad2 set;
  # systemd's order: Monday first, Sunday (cron's 0) last.
  systemdDays = [
    "Mon"
    "Tue"
    "Wed"
    "Thu"
    "Fri"
    "Sat"
    "Sun"
  ];
  weekdays = dow: formatRuns (b.elemAt systemdDays) (b.filter (i: b.elem (mod (i + 1) 7) dow) (range 0 6));

  daysIn = [
    31
    29
    31
    30
    31
    30
    31
    31
    30
    31
    30
    31
  ];

  convertCron =
    fail: s:
    if b.substring 0 1 s == "@" then
      if b.hasAttr s shortcuts then
        convertCron fail shortcuts.${s}
      else if s == "@reboot" then
        fail "cron shortcut \"@reboot\" is not supported: a timer cannot fire at boot; use a calendar expression"
      else
        fail "unknown cron shortcut \"${s}\" (known: @hourly @daily @midnight @weekly @monthly @yearly @annually)"
    else
      let
        fs = splitFields s;
        sets = b.genList (i: parseField fail (b.elemAt cronFields i) (b.elemAt fs i)) 5;
        minute = b.elemAt sets 0;
        hour = b.elemAt sets 1;
        dom = b.elemAt sets 2;
        month = b.elemAt sets 3;
        dowRaw = b.elemAt sets 4;
        dow = b.filter (d: b.elem d dowRaw || d == 0 && b.elem 7 dowRaw) (range 0 6);
        # Vixie cron / cronie: when both day fields are restricted a day
        # matches if EITHER does; when either starts with `*` (even `*/2`)
        # both must match. systemd always ANDs weekday and date.
        orMode = b.substring 0 1 (b.elemAt fs 2) != "*" && b.substring 0 1 (b.elemAt fs 4) != "*";
        # February has 29 days since leap years exist.
        domPossible = b.any (m: b.any (d: d <= b.elemAt daysIn (m - 1)) dom) month;
        time = "${numbers 0 23 hour}:${numbers 0 59 minute}:00";
        entry =
          dow: dom:
          let
            date = "*-${numbers 1 12 month}-${numbers 1 31 dom} ${time}";
          in
          if b.length dow == 7 then date else "${weekdays dow} ${date}";
        allDow = range 0 6;
        allDom = range 1 31;
      in
      if b.length fs != 5 then
        fail "cron schedule \"${s}\" has ${toString (b.length fs)} fields, want 5 (minute hour day-of-month month day-of-week)"
      # Every field must be valid, even one that does not matter for the
      # result.
      else if !b.deepSeq sets true then
        throw "unreachable"
      else if !orMode && !domPossible then
        fail "cron schedule \"${s}\" never fires: no selected month has ${
          if b.length dom == 1 then
            "day ${toString (b.head dom)}"
          else
            "any of days ${b.concatStringsSep "," (map toString dom)}"
        }"
      else if !orMode then
        [ (entry dow dom) ]
      else if b.length dow == 7 || b.length dom == 31 then
        [ (entry allDow allDom) ]
      # Weekday entry first, then the day-of-month entry unless it can
      # never elapse.
      else
        [ (entry dow allDom) ] ++ (if domPossible then [ (entry allDow dom) ] else [ ]);
in
expr:
let
  fail = reason: throw "backupgen: invalid schedule \"${expr}\": ${reason}";
  s = trim expr;
  fs = splitFields s;
  cronLike = b.all isCronField fs;
  result =
    if b.stringLength expr > maxLen then
      fail "schedule is ${toString (b.stringLength expr)} bytes long, at most ${toString maxLen} allowed"
    else if s == "" then
      fail "schedule is empty"
    # Cron: an @-shortcut or 5 fields of cron characters. 4 or more such
    # fields are a cron expression with the wrong number of fields; no
    # systemd calendar expression looks like that. Nor has one 5 or more
    # fields of any kind (weekdays, date, time and zone are at most 4), so
    # those are cron too, and "0 0 ? * *" fails here rather than in systemd.
    else if b.substring 0 1 s == "@" || cronLike && b.length fs >= 4 then
      convertCron fail s
    else if b.length fs >= 5 then
      convertCron (
        reason:
        fail "${reason} (a schedule of 5 or more fields is cron: minute hour day-of-month month day-of-week)"
      ) s
    else if hasControl s then
      fail "calendar schedule \"${s}\" contains a control character"
    else
      [ s ];
in
b.deepSeq result result
