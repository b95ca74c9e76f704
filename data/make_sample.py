"""Writes data/bike-maintenance.jsonl: the sample corpus, written for genq (no text copied from elsewhere).

    python data/make_sample.py
"""

import json
from pathlib import Path

SECTIONS = {
    "chain": [
        ("Why a chain squeaks", "A squeaking chain is a dry chain. The rollers grind against the sprockets when the lubricant has washed out, usually after a wet ride. Wipe the chain, apply one drop of lube to each roller, spin the cranks for a minute and wipe off the excess."),
        ("Measuring chain wear", "Chains do not really stretch; the pins and rollers wear, which lengthens the pitch. A chain checker tool tells you when wear passes 0.5 percent on 11 and 12 speed drivetrains or 0.75 percent on older ones. Replace the chain then, before it wears the cassette."),
        ("Choosing chain lubricant", "Wet lube resists rain and lasts long but picks up grit. Dry lube stays cleaner in dusty conditions but needs reapplying every hundred kilometres or so. Wax-based coatings run cleanest of all but require a fully degreased chain before the first application."),
        ("How often to lube a chain", "Lube the chain when it sounds noisy or looks dry, after any ride in rain, and roughly every 150 to 300 kilometres in dry weather. Over-lubing is a common mistake: excess oil on the outside only collects dirt that acts like grinding paste."),
        ("Shortening a new chain", "A new chain usually comes too long. Wrap it around the largest chainring and the largest sprocket without going through the derailleur, then add one full link (two half links). Break it with a chain tool at that point and join it with the quick link."),
        ("Using a quick link", "Quick links let you open and close a chain without a chain tool. Slide the two halves into the chain ends, then stand on the pedal with the rear brake on to snap the link shut. Most brands say their 11 and 12 speed links should not be reused."),
        ("Chain skipping under load", "If the chain jumps when you pedal hard, the chain and cassette have probably worn together. A new chain on a worn cassette will skip too, so replace both. A stiff link can also cause skipping; flex each link sideways to find and free it."),
        ("Chain falling off the chainring", "A chain that drops off the front rings usually points to a front derailleur limit screw set too wide, a bent chainring tooth or a chain that is too long. On single-ring bikes, a narrow-wide ring and a clutch rear derailleur keep the chain in place."),
        ("Cleaning a chain without removing it", "A chain cleaning box clamps around the lower run of the chain and scrubs it with brushes in degreaser while you turn the cranks backwards. Rinse with water, dry the chain with a rag and let it air dry fully before applying fresh lube."),
        ("Chain suck", "Chain suck happens when the chain fails to leave the bottom of a chainring and is dragged up into the frame. Worn or bent chainring teeth and a dirty chain are the usual causes. Clean the drivetrain and file or replace damaged teeth."),
    ],
    "brakes": [
        ("Rim brake pads wearing out", "Rim brake pads have grooves that show wear; when the grooves are gone the pads need replacing. Worn pads squeal, stop poorly in the wet and can expose the metal holder, which scores the rim. Replace both pads on a wheel at the same time."),
        ("Aligning rim brake pads", "Each pad should meet the braking surface of the rim squarely, never touching the tyre and never dipping below the rim. Loosen the pad bolt, squeeze the brake lever to hold the pad in place and retighten. Toe the front of the pad in slightly to reduce squeal."),
        ("Disc brake squeal", "Squealing disc brakes are usually contaminated by oil or lube on the rotor or pads. Clean the rotor with isopropyl alcohol. If the pads are contaminated, replace them or sand off the glazed surface and bed them in again with repeated firm stops."),
        ("Bedding in new disc brake pads", "New pads and rotors need bedding in to transfer an even layer of pad material onto the rotor. Ride at moderate speed and brake firmly to walking pace about twenty times without locking the wheel. Braking power rises noticeably afterwards."),
        ("Spongy hydraulic brake lever", "A lever that feels soft or pulls to the bar means air has entered the hydraulic line. Bleed the brake with the fluid the manufacturer specifies: mineral oil for Shimano and Magura, DOT fluid for SRAM and many others. Never mix the two types."),
        ("Adjusting cable disc brakes", "Mechanical disc brakes have a fixed inner pad and a moving outer pad. Turn the inner pad adjuster until the pad nearly touches the rotor, then take up cable slack at the barrel adjuster so the outer pad engages with a short lever throw."),
        ("Centering a rubbing disc caliper", "If a disc rotor rubs, loosen the two caliper mounting bolts, squeeze and hold the brake lever, and tighten the bolts again while holding it. The caliper centres itself on the rotor. A slightly bent rotor can be straightened gently with a rotor truing tool."),
        ("Replacing brake cables", "Frayed or rusty brake cables make braking heavy and can snap. Feed a new inner cable through the lever and housing, clamp it at the brake with the pads close to the rim or rotor, and crimp a cap on the cut end. New housing makes the biggest difference to feel."),
        ("Disc pad thickness", "Check disc pads by looking into the caliper from above. Replace them when the friction material is thinner than about half a millimetre, or one and a half millimetres including the backing plate. Worn-through pads grind metal on metal and ruin the rotor."),
        ("Rotor wear limit", "Disc rotors wear thinner with use. Most have a minimum thickness stamped on them, often 1.5 millimetres for a rotor that started at 1.8. Measure with a caliper gauge; a rotor below the limit overheats and can fail."),
        ("Brake lever reach", "Lever reach is the distance from the handlebar to the brake lever. Riders with smaller hands should reduce it with the reach screw so the first finger joint wraps the lever. Readjust the pad clearance afterwards on cable brakes."),
        ("Brakes that fade on long descents", "Brake fade comes from overheating. Brake in firm, short bursts rather than dragging the brakes, and consider larger rotors or metallic pads for long mountain descents. Hydraulic fluid that is old or contaminated with water boils at a lower temperature."),
    ],
    "tyres": [
        ("Fixing a flat tube", "Remove the wheel, lever one side of the tyre off the rim and pull out the tube. Find the hole by inflating the tube and listening, patch it after roughening the area, and check the inside of the tyre for the thorn or glass that caused it before refitting."),
        ("Finding what caused a puncture", "Always find the cause of a flat before fitting a new tube. Run your fingers carefully around the inside of the tyre to feel for sharp objects, and line up the tube hole with the tyre to locate it. Two small parallel slits mean a pinch flat from low pressure."),
        ("Pinch flats", "A pinch flat, sometimes called a snake bite, happens when the tyre compresses so far on an edge or pothole that the tube is trapped against the rim. It leaves two slits side by side. Higher pressure or a tubeless setup prevents it."),
        ("Choosing tyre pressure", "Good tyre pressure depends on rider weight, tyre width and surface. Wider tyres run lower pressure. As a rough guide, 28 millimetre road tyres suit 5 to 6.5 bar, while 2.3 inch mountain bike tyres suit 1.4 to 1.8 bar. Lower pressure grips better on rough ground."),
        ("Presta and Schrader valves", "Presta valves are thin with a small locknut that must be unscrewed before inflating; Schrader valves are the same as car valves. Most modern pumps fit both. A Presta valve in a rim drilled for Schrader needs an adapter ring to keep it straight."),
        ("Setting up tubeless tyres", "Tubeless tyres need tubeless-ready rims, rim tape that seals the spoke holes, a tubeless valve and sealant. Seat the tyre bead with a burst of air from a booster pump, add sealant through the valve, and spin the wheel to spread it. Small holes then seal themselves."),
        ("Topping up tubeless sealant", "Tubeless sealant dries out over a few months, faster in hot weather. Check it every two or three months by removing the valve core and dipping a zip tie inside, or by shaking the wheel to hear the liquid. Add 30 to 60 millilitres as needed."),
        ("Tyre wear indicators", "Many road tyres have small dimples that disappear when the tread is worn. Replace a tyre when the casing threads show, when the tread is squared off, or when cuts let you see the inner layer. The rear tyre wears about twice as fast as the front."),
        ("Getting a tight tyre onto the rim", "Push the already-fitted bead into the central channel of the rim all the way round; this gives the slack needed to roll the last part of the tyre on by hand. Avoid levers for the final section because they easily pinch the tube."),
        ("Slow leaks", "A tyre that goes soft over a few days usually has a slow leak at the valve or a tiny puncture. Tighten the valve core, then submerge the inflated tube in water and watch for bubbles. Latex tubes lose air faster than butyl by design."),
        ("Rim tape", "Rim tape covers the spoke holes inside the rim. If it slips or tears, the edge of a spoke hole cuts the tube from the inside, causing flats on the inner side of the tube. Replace it with tape of the correct width for the rim."),
        ("Carrying a repair kit", "A small saddle bag with a spare tube, two tyre levers, a mini pump or CO2 inflator, a patch kit and a multi-tool handles nearly every roadside problem. For tubeless tyres, add tyre plugs for holes too big for sealant."),
    ],
    "gears": [
        ("Indexing a rear derailleur", "If the chain hesitates or clatters between sprockets, the rear shifting needs indexing. Shift to the smallest sprocket, then turn the barrel adjuster a quarter turn at a time: anticlockwise if it is slow to climb to bigger sprockets, clockwise if slow to come back down."),
        ("Setting derailleur limit screws", "The limit screws marked H and L stop the derailleur from throwing the chain off the cassette. With the chain on the smallest sprocket, set H so the pulley lines up under it; on the largest sprocket, set L so the chain cannot go into the spokes."),
        ("Bent derailleur hanger", "A bent derailleur hanger is the most common cause of shifting that cannot be fixed by adjusting the cable. It happens when the bike falls on its drive side. A hanger alignment tool straightens it, or replace it, since hangers are designed to bend before the frame does."),
        ("B-tension screw", "The B-tension screw sets the gap between the upper jockey wheel and the sprockets. Too close and the pulley chatters against the largest cog; too far and shifting is vague. Many manufacturers specify a gap of 5 to 6 millimetres on the largest sprocket."),
        ("Stretched gear cables", "New gear cables settle and stretch slightly in the first weeks, so shifting drifts out of adjustment. Add tension with the barrel adjuster after a few rides. Corroded or kinked cables feel heavy and should be replaced together with their housing."),
        ("Front derailleur rubbing", "If the chain rubs the front derailleur cage, check the cage is parallel to the chainrings and 1 to 3 millimetres above the largest ring. Cross-chaining, such as the big ring with the biggest sprocket, causes rub on some bikes and is best avoided."),
        ("Electronic shifting batteries", "Electronic groupsets need charging. Wireless systems usually have a small battery on each derailleur, while wired ones use a central battery in the frame or seatpost. Most show the charge level with an LED; a full charge typically lasts hundreds to a thousand kilometres."),
        ("Ghost shifting", "If the bike shifts by itself over bumps, the cable housing may be too short so that the handlebar turning pulls the cable, or the outer housing has compressed. Check the housing lengths and that each ferrule sits fully in its stop."),
        ("Replacing a cassette", "Remove the rear wheel, fit a cassette lockring tool, hold the cassette with a chain whip and turn the lockring anticlockwise. Slide the new cassette onto the freehub body, matching the wide spline, and tighten the lockring to about 40 newton metres."),
        ("Cleaning the jockey wheels", "The jockey wheels on the rear derailleur collect a ring of grime that adds friction and noise. Scrape it off with a flat screwdriver while turning the cranks backwards, then wipe them clean. Worn, pointed teeth mean the wheels need replacing."),
        ("Gear ratios explained", "A gear ratio is the number of chainring teeth divided by the number of sprocket teeth. A low ratio, such as a small chainring with a big sprocket, makes climbing easier. A high ratio gives more speed on flats and descents but needs more force."),
        ("Internal gear hubs", "Internally geared hubs keep the gears inside the rear hub, sealed from dirt. They need little maintenance beyond an occasional oil change or regreasing and cable adjustment, and they can shift while stationary. They are heavier and less efficient than derailleurs."),
    ],
    "wheels": [
        ("Truing a wobbly wheel", "Spin the wheel in the frame or a truing stand and watch where the rim moves sideways. Near a wobble to the left, tighten a spoke that goes to the right hub flange and loosen the neighbouring left one, in quarter turns. Small corrections spread over several spokes work best."),
        ("Broken spoke", "A broken spoke makes the wheel wobble badly and can rub the frame or brake. Open the brake quick release to ride home carefully. Replace the spoke with one of the same length, tension it to match its neighbours and true the wheel."),
        ("Spoke tension", "Even spoke tension makes a strong wheel. Pluck spokes on the same side of the wheel like guitar strings: they should sound about the same. A spoke tension meter gives exact readings; loose spokes cause a wheel to go out of true quickly."),
        ("Checking hub bearings for play", "Hold the wheel at the rim and rock it side to side in the frame. A knocking feel means loose hub bearings. Cup and cone hubs can be adjusted with thin cone spanners; cartridge bearing hubs need the bearings replaced when they feel rough."),
        ("Quick release and thru axles", "Quick release skewers must be closed firmly enough to leave an imprint on your palm, with the lever pointing backwards. Thru axles screw into the frame and should be tightened to the torque printed on them, often 12 to 15 newton metres."),
        ("Freehub clicking and drag", "If the pedals turn when you freewheel, the freehub pawls may be sticky with old grease. Remove the freehub body, clean the pawls and springs and lubricate them with light grease or oil as the hub maker specifies. Too much thick grease stops the pawls engaging."),
        ("Rim wear on rim brake bikes", "Rim brakes slowly wear away the rim sidewall. Many rims have a wear indicator groove or dot; when it disappears the rim is too thin and can burst under tyre pressure. A concave braking surface is another warning sign."),
        ("Wheel size standards", "The common mountain bike wheel sizes are 27.5 inch and 29 inch; road and gravel bikes use 700c, which has the same bead seat diameter as 29 inch. Tyre sizes are best compared by their ISO number, such as 622 for 700c."),
        ("Tubeless rim tape for wheels", "When converting wheels to tubeless, clean the rim bed with alcohol and apply tubeless tape slightly wider than the inner rim width, overlapping by a hand's width at the valve hole. Press it firmly into place so sealant cannot creep underneath."),
        ("Storing wheels over winter", "Store spare wheels off the ground in a dry place and keep some air in the tyres so they hold their shape. Tubeless wheels stored for months need fresh sealant before use because the old sealant will have dried."),
    ],
    "bearings": [
        ("Loose headset", "A loose headset makes the front end knock when you brake. Apply the front brake and rock the bike forward and back with a hand on the headset. To fix it, loosen the stem bolts, tighten the top cap bolt until the play disappears, then retighten the stem bolts."),
        ("Headset that feels notchy", "If the steering catches in the straight-ahead position, the headset bearings are pitted or corroded. Cartridge bearings are simply replaced with the same size; check the bearing markings or the headset standard code before ordering."),
        ("Creaking bottom bracket", "A creak that comes with each pedal stroke often starts at the bottom bracket, but pedals, chainring bolts, the saddle and the seatpost are frequent culprits too. Clean and regrease threads and contact faces one at a time to find the source."),
        ("Checking bottom bracket play", "Grab both crank arms and push them sideways toward and away from the frame. Any knocking movement points to a loose crank or worn bottom bracket bearings. Spin the cranks with the chain off to feel for roughness."),
        ("Pedal bearings", "Pedals with rough or loose bearings feel gritty and can click. Many pedals can be serviced by removing the axle and regreasing or replacing the bearings. Remember that the left pedal has a reverse thread and loosens clockwise."),
        ("Press fit bottom brackets", "Press fit bottom brackets are pressed straight into the frame without threads. They can creak if the frame shell is slightly out of tolerance. Retaining compound on the cups or a threaded-together replacement often cures persistent creaks."),
        ("Greasing threads", "Grease every thread that screws into aluminium or steel, such as pedal axles, bottom bracket cups and bolts, to prevent seizing and creaking. Use carbon assembly paste instead of grease where carbon parts are clamped, such as seatposts and handlebars."),
        ("Rear suspension pivot bearings", "Full suspension frames have bearings at each pivot. Remove the shock and move the rear end through its travel: any roughness or play means the pivot bearings need replacing. Pressing them in squarely with a bearing press avoids damage."),
        ("Cup and cone adjustment", "Cup and cone bearings are adjusted by screwing the cone against the balls and locking it with a locknut. Aim for the point where play just disappears; when the axle is clamped in the frame, a quick release compresses it slightly."),
        ("Washing a bike without harming bearings", "Avoid spraying a pressure washer at hubs, headsets and bottom brackets, because it drives water past the seals and washes out the grease. Use a bucket, a soft brush and a gentle hose instead."),
    ],
    "fit": [
        ("Setting saddle height", "With the heel on the pedal at the bottom of the stroke, your leg should be straight; when you pedal with the ball of the foot, the knee is then slightly bent. A saddle that is too low strains the knees, too high makes the hips rock."),
        ("Saddle fore and aft position", "Slide the saddle on its rails so that, with the cranks horizontal, the front of your knee sits roughly above the pedal axle. Move it in small steps and mark the old position. Tighten the rail clamp bolts to the torque printed near them."),
        ("Saddle tilt", "Most riders are comfortable with the saddle level or the nose tilted down one or two degrees. A nose tilted up puts pressure on soft tissue; tilted too far down, you slide forward and push on your hands."),
        ("Handlebar height and reach", "A lower, longer position is faster but harder on the back and neck. Spacers under the stem and a shorter or angled stem raise and shorten the reach. Comfort on long rides usually beats a small aerodynamic gain."),
        ("Cleat position", "Place shoe cleats so the ball of the foot sits over or slightly behind the pedal axle. The cleat angle should follow your natural foot angle; if your heels point in or out when walking, let the cleat allow it to protect the knees."),
        ("Numb hands", "Numb or tingling hands usually come from too much weight on the bars or a wrist bent at an angle. Raise the bars, check the saddle is not tilted forward, try ergonomic grips or thicker bar tape, and move your hands often."),
        ("Seatpost slipping", "A seatpost that slowly slides down needs its clamp tightened to the specified torque. On carbon posts or frames, apply carbon assembly paste, which adds grip so that less clamping force is needed."),
        ("Dropper post care", "Dropper seatposts need their stanchion wiped clean after muddy rides and the cable tension checked. If a dropper sags under weight, the internal cartridge may need bleeding or servicing, which many brands ask you to do at a service centre."),
    ],
    "cleaning": [
        ("Washing a dirty bike", "Rinse off loose mud, then wash the frame with bike cleaner and a soft brush, working from the top down. Degrease the drivetrain separately with a stiffer brush. Rinse with low pressure, dry with a cloth and lube the chain straight away."),
        ("Degreasing the drivetrain", "A clean drivetrain shifts better and lasts longer. Apply degreaser to the chain, cassette, chainrings and jockey wheels, scrub, and rinse well, since degreaser left in the chain dilutes new lube. Let everything dry before lubricating."),
        ("Protecting the frame", "Clear protective film on the down tube and chainstays stops stones and chain slap from chipping the paint. Apply it to a clean, dry frame, smoothing out air bubbles from the centre outward."),
        ("After a ride in the rain", "After a wet ride, rinse grit off the bike, dry the chain and apply fresh lube. Wipe the brake rotors or rims, and store the bike somewhere it can dry. Water left in the frame can be drained by removing the seatpost."),
        ("Cleaning disc brake rotors", "Clean rotors with isopropyl alcohol and a clean paper towel, never with degreasers or polishes that leave a film. Keep spray lubricants away from the rotors when oiling the chain, or cover the brakes while doing it."),
        ("Salt from winter roads", "Road salt corrodes chains, bolts and cables quickly. Rinse the bike with fresh water after riding on salted roads, dry it and lube the chain. A light protective spray on bolts, kept well away from the brakes, helps."),
        ("Cleaning suspension stanchions", "Wipe the fork stanchions and shock shaft after every ride to keep dirt from being dragged past the seals. A drop of suspension oil on the wiper seals, worked in by compressing the fork a few times, keeps them supple."),
        ("Why not to use dish soap", "Some household detergents contain salt or leave residues that attract dirt and can harm seals. A dedicated bike wash or a mild car shampoo is gentler on paint, rubber and decals."),
    ],
    "suspension": [
        ("Setting suspension sag", "Sag is how far the suspension compresses under your weight in the riding position. Most forks run 15 to 20 percent sag and rear shocks 25 to 30 percent. Push the o-ring against the seal, sit on the bike carefully, step off and measure."),
        ("Rebound damping", "Rebound controls how fast the suspension extends after a bump. Too fast and the bike bucks and feels springy; too slow and it packs down over repeated hits. Start in the middle of the range and adjust a few clicks at a time."),
        ("Compression damping and lockout", "Compression damping slows the suspension as it compresses. Adding it reduces bobbing when pedalling and diving under braking. A lockout firms the fork almost completely for smooth climbs; open it again before descending."),
        ("Fork lower leg service", "The fork lowers hold a small amount of oil that lubricates the bushings and seals. Replacing that oil and cleaning the seals every 50 hours of riding keeps the fork smooth. A full damper service is needed less often."),
        ("Air spring pressure", "Air forks and shocks are tuned by pressure. Use a shock pump, set the pressure from the chart on the fork leg as a starting point, then adjust to reach the right sag. Pressure readings drop slightly when the pump is removed."),
        ("Volume spacers", "Volume spacers reduce the air volume in a fork or shock, making it progressive so that it resists bottoming out near the end of its travel. Add one if you use all the travel often; remove one if you never reach it."),
        ("Suspension knocking", "A knock at the top of the fork travel can come from a loose headset, not the fork. Check the headset first. A clunk when the fork extends fully can mean rebound damping is too fast or the air spring needs its negative chamber equalised."),
        ("Coil versus air shocks", "Coil shocks feel more supple and stay consistent on long descents because they do not heat up as much, but they are heavier and tuned by changing springs. Air shocks are lighter and easy to adjust with a pump."),
    ],
    "ebike": [
        ("Caring for an e-bike battery", "Lithium-ion batteries last longest when stored between 30 and 60 percent charge at room temperature. Avoid leaving the battery fully charged or completely empty for weeks, and do not charge it below freezing."),
        ("E-bike range", "Range depends on assistance level, terrain, rider weight, tyre pressure and temperature. Using a lower assistance mode, shifting to an easy gear before stopping and keeping tyres well inflated all add kilometres."),
        ("Cleaning an e-bike", "Clean an e-bike like a normal bike, but remove the battery first and avoid spraying water at the motor, display and connectors. Dry the battery contacts and apply a little contact grease if the manufacturer recommends it."),
        ("E-bike chain wear", "Motors put extra force through the drivetrain, so chains and cassettes on e-bikes wear faster. Check chain wear every few hundred kilometres and consider a stronger e-bike specific chain."),
        ("Error codes on the display", "Most e-bike systems show error codes for sensor, motor or battery faults. Often a restart, reseating the battery or cleaning the speed sensor magnet clears them. The code list in the manual explains which need a dealer."),
        ("Speed sensor magnet", "Many e-bikes measure speed with a magnet on a spoke or the rotor passing a sensor on the frame. If the magnet shifts, the motor may cut out or show an error. Align it within a few millimetres of the sensor."),
        ("Transporting an e-bike battery", "When carrying an e-bike on a car rack, remove the battery to reduce weight and protect it from rain and theft. Airlines generally refuse e-bike batteries because of their energy capacity."),
        ("Motor noise", "A rattling or grinding motor can be a loose mounting bolt, a worn chainring or a failing internal bearing. Check the external bolts and chainring first; internal motor repairs are usually for authorised service centres."),
    ],
    "routine": [
        ("Pre-ride check", "Before riding, squeeze both brakes, check tyre pressure, make sure the wheels are secure and spin them to see they run straight. Lift and drop the bike to listen for rattles, and check that lights are charged."),
        ("Monthly maintenance", "Once a month, clean and lube the drivetrain, check chain wear, inspect tyres for cuts, check brake pad wear and bolt torques, and look over the frame for cracks, especially near welds and the bottom bracket."),
        ("Essential tools for home maintenance", "A good home kit includes a floor pump with a gauge, hex keys from 2 to 10 millimetres, Torx T25, a torque wrench, tyre levers, a chain tool, a chain checker, cable cutters and a workstand."),
        ("Using a torque wrench", "Modern bikes use light parts that are easily damaged by overtightening. Tighten bolts to the torque printed on the part with a torque wrench, especially on carbon handlebars, stems and seatposts. Turn slowly until the wrench clicks."),
        ("Annual service", "A yearly service covers everything: bearings checked and regreased, cables and housing replaced, brakes bled, suspension serviced and wheels trued. Riders who ride often in wet or muddy conditions may need it twice a year."),
        ("Storing a bike", "Store a bike indoors, away from heaters and direct sunlight, which age tyres and seals. Hanging it by a wheel is fine. Before long storage, clean and lube the chain and pump up the tyres."),
        ("Checking the frame for cracks", "Inspect the frame after a crash and at every clean, looking at welds, the head tube junction, chainstays and seatstays. On carbon frames, tap suspect areas with a coin: a dull sound rather than a sharp click can mean hidden damage."),
        ("Lights and visibility", "Front and rear lights should be charged before every ride in low light. Aim the front light slightly downward so it lights the road without dazzling oncoming traffic, and use a steady rear light in groups."),
    ],
}


def main() -> None:
    out = Path(__file__).resolve().parent / "bike-maintenance.jsonl"
    with open(out, "w", encoding="utf-8") as handle:
        for section, entries in SECTIONS.items():
            for number, (title, text) in enumerate(entries, start=1):
                record = {"_id": f"{section}-{number:02d}", "title": title, "text": text, "section": section}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {sum(len(v) for v in SECTIONS.values())} passages to {out}")


if __name__ == "__main__":
    main()
